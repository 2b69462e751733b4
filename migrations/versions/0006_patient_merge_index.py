"""Index patients.merged_into_id: attribution counts roster rows of records merged into a patient
(app/state/patient_context.py), a lookup every consumer batch makes.

Revision ID: 0006_patient_merge_index
Revises: 0005_task_supersession
"""

from __future__ import annotations

from alembic import op

revision: str = "0006_patient_merge_index"
down_revision: str | None = "0005_task_supersession"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("patients") as batch:
        batch.create_index(batch.f("ix_patients_merged_into_id"), ["merged_into_id"])


def downgrade() -> None:
    with op.batch_alter_table("patients") as batch:
        batch.drop_index(batch.f("ix_patients_merged_into_id"))
