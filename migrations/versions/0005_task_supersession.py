"""A task a readmission superseded names the new stay, whose tasks list it (GET /tasks/{id}/explain).

Revision ID: 0005_task_supersession
Revises: 0004_task_routing
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005_task_supersession"
down_revision: str | None = "0004_task_routing"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("superseded_by_encounter_id", sa.Uuid(), nullable=True))
        batch.create_index(batch.f("ix_tasks_superseded_by_encounter_id"), ["superseded_by_encounter_id"])
        batch.create_foreign_key(
            batch.f("fk_tasks_superseded_by_encounter_id_encounters"),
            "encounters",
            ["superseded_by_encounter_id"],
            ["id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_constraint(batch.f("fk_tasks_superseded_by_encounter_id_encounters"), type_="foreignkey")
        batch.drop_index(batch.f("ix_tasks_superseded_by_encounter_id"))
        batch.drop_column("superseded_by_encounter_id")
