"""Task business status: a referral loop's milestone (FHIR Task.businessStatus; app/tasks/referral.py).

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
        batch.add_column(sa.Column("business_status", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("business_status")
