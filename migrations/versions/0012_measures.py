"""Quality-measure indexes (docs/measures.md): a period of stays by discharge or admission instant,
referrals by the day they were raised, and a practice's attributed members.

Revision ID: 0012_measures
Revises: 0010_consent_audit
"""

from __future__ import annotations

from alembic import op

revision: str = "0012_measures"
down_revision: str | None = "0010_consent_audit"
branch_labels = None
depends_on = None

# table -> index name -> key columns
INDEXES = {
    "encounters": {
        "ix_encounters_discharge_at": ["discharge_at"],
        "ix_encounters_admit_at": ["admit_at"],
    },
    "tasks": {"ix_tasks_type_created": ["type", "created_at"]},
    "roster_members": {"ix_roster_members_practice_status": ["practice", "status"]},
}


def upgrade() -> None:
    for table, indexes in INDEXES.items():
        with op.batch_alter_table(table) as batch:
            for name, columns in indexes.items():
                batch.create_index(name, columns, unique=False)


def downgrade() -> None:
    for table, indexes in INDEXES.items():
        with op.batch_alter_table(table) as batch:
            for name in indexes:
                batch.drop_index(name)
