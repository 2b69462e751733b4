"""Task business status: a referral loop's milestone (FHIR Task.businessStatus; app/tasks/referral.py);
and the visit that completed a task as evidence (a cancelled visit reopens it).

Revision ID: 0007_rules_evidence
Revises: 0006_patient_merge_index
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007_rules_evidence"
down_revision: str | None = "0006_patient_merge_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("business_status", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("completed_by_encounter_id", sa.Uuid(), nullable=True))
        batch.create_index(batch.f("ix_tasks_completed_by_encounter_id"), ["completed_by_encounter_id"])
        batch.create_foreign_key(
            batch.f("fk_tasks_completed_by_encounter_id_encounters"),
            "encounters",
            ["completed_by_encounter_id"],
            ["id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_constraint(batch.f("fk_tasks_completed_by_encounter_id_encounters"), type_="foreignkey")
        batch.drop_index(batch.f("ix_tasks_completed_by_encounter_id"))
        batch.drop_column("completed_by_encounter_id")
        batch.drop_column("business_status")
