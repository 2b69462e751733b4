"""Worklist indexes (open tasks in due order: per role, per owner, all roles).

Partial indexes over the open statuses only: a worklist reads open tasks, which stay a small share of
a table that keeps every closed task. docs/worklists.md explains which query uses which index.

Revision ID: 0008_worklists
Revises: 0007_rules_evidence
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008_worklists"
down_revision: str | None = "0007_rules_evidence"
branch_labels = None
depends_on = None

OPEN = "status IN ('accepted', 'in-progress', 'on-hold', 'ready', 'received', 'requested')"
# name -> (key columns, PostgreSQL INCLUDE columns: what the capped total needs, for index-only scans)
INDEXES: dict[str, tuple[list[str], list[str]]] = {
    "ix_tasks_open_role_due": (["role", "team", "due_at", "id"], ["encounter_id"]),
    "ix_tasks_open_owner_due": (["owner", "due_at", "id"], []),
    "ix_tasks_open_due": (["due_at", "id"], ["team", "encounter_id", "role"]),
}


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        for name, (columns, include) in INDEXES.items():
            batch.create_index(
                name,
                columns,
                postgresql_where=sa.text(OPEN),
                sqlite_where=sa.text(OPEN),
                postgresql_include=include,
            )


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        for name in INDEXES:
            batch.drop_index(name)
