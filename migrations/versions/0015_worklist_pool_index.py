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
INCLUDE = {"upgrade": "encounter_id, part2", "downgrade": "encounter_id"}


def _postgresql(direction: str) -> None:
    """Built CONCURRENTLY, outside the migration's transaction: a plain CREATE/DROP INDEX locks `tasks`
    for the whole build, and the running release keeps reading and writing it during a rollout
    (docs/operations.md, expand and contract). The new role index is built beside the old, then swapped."""
    with op.get_context().autocommit_block():
        if direction == "upgrade":
            op.execute(
                "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_tasks_open_pool_due ON tasks (role, due_at, id) "
                f"INCLUDE (encounter_id, part2) WHERE {POOL}"
            )
        else:
            op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_tasks_open_pool_due")
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_tasks_open_role_due_next")
        op.execute(
            "CREATE INDEX CONCURRENTLY ix_tasks_open_role_due_next ON tasks (role, team, due_at, id) "
            f"INCLUDE ({INCLUDE[direction]}) WHERE {OPEN}"
        )
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_tasks_open_role_due")
        op.execute("ALTER INDEX ix_tasks_open_role_due_next RENAME TO ix_tasks_open_role_due")


def _sqlite(direction: str) -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_index("ix_tasks_open_role_due")
        batch.create_index(
            "ix_tasks_open_role_due",
            ["role", "team", "due_at", "id"],
            sqlite_where=sa.text(OPEN),
            postgresql_where=None,
        )
        if direction == "upgrade":
            batch.create_index("ix_tasks_open_pool_due", ["role", "due_at", "id"], sqlite_where=sa.text(POOL))
        else:
            batch.drop_index("ix_tasks_open_pool_due")


def _migrate(direction: str) -> None:
    (_postgresql if op.get_bind().dialect.name == "postgresql" else _sqlite)(direction)


def upgrade() -> None:
    _migrate("upgrade")


def downgrade() -> None:
    _migrate("downgrade")
