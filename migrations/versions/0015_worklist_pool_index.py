"""Worklist indexes for the unattributed pool and the Part 2 gate.

- `ix_tasks_open_pool_due (role, due_at, id) WHERE team IS NULL AND open`: PostgreSQL does not treat
  `team IS NULL` as an equality, so (role, team, due_at, id) could not return a pool branch in due order
  and each worklist page sorted the role's whole pool (bench/api.py: ~10 ms of database time per page
  at a million tasks).
- `ix_tasks_open_role_due` also carries `part2`, which every facilitator's query filters on, so the
  capped total stays an index-only scan.

Revision ID: 0015_worklist_pool_index
Revises: 0012_measures
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0015_worklist_pool_index"
down_revision: str | None = "0012_measures"
branch_labels = None
depends_on = None

OPEN = "status IN ('accepted', 'in-progress', 'on-hold', 'ready', 'received', 'requested')"
POOL = f"team IS NULL AND {OPEN}"


def _role_due(include: list[str]) -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_index("ix_tasks_open_role_due")
        batch.create_index(
            "ix_tasks_open_role_due",
            ["role", "team", "due_at", "id"],
            postgresql_where=sa.text(OPEN),
            sqlite_where=sa.text(OPEN),
            postgresql_include=include,
        )


def upgrade() -> None:
    _role_due(["encounter_id", "part2"])
    with op.batch_alter_table("tasks") as batch:
        batch.create_index(
            "ix_tasks_open_pool_due",
            ["role", "due_at", "id"],
            postgresql_where=sa.text(POOL),
            sqlite_where=sa.text(POOL),
            postgresql_include=["encounter_id", "part2"],
        )


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_index("ix_tasks_open_pool_due")
    _role_due(["encounter_id"])
