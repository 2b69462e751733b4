"""Transactional outbox (issue 9): every task change is published as a CloudEvent on the task-events topic.

Every path that changes a task writes a task_history row (ORM and bulk statements alike), so a trigger
on task_history is the one place that catches them all: it adds the task_outbox row in the same
transaction. PostgreSQL uses a statement-level trigger with a transition table (one INSERT ... SELECT
for a bulk statement); SQLite only has row triggers. Rebuilding task_history on SQLite (batch_alter_table)
drops its triggers: a later migration that does so must create this one again.

Revision ID: 0011_outbox
Revises: 0010_consent_audit
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import app.db.types

revision: str = "0011_outbox"
down_revision: str | None = "0010_consent_audit"
branch_labels = None
depends_on = None

PG_FUNCTION = """
CREATE FUNCTION task_history_to_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_outbox (history_id) SELECT id FROM new_history;
    RETURN NULL;
END
$$
"""
PG_TRIGGER = """
CREATE TRIGGER task_history_outbox AFTER INSERT ON task_history
REFERENCING NEW TABLE AS new_history FOR EACH STATEMENT EXECUTE FUNCTION task_history_to_outbox()
"""
SQLITE_TRIGGER = """
CREATE TRIGGER task_history_outbox AFTER INSERT ON task_history
BEGIN
    INSERT INTO task_outbox (history_id) VALUES (NEW.id);
END
"""


def upgrade() -> None:
    op.create_table(
        "task_outbox",
        sa.Column(
            "history_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=False, nullable=False
        ),
        sa.Column("published_at", app.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["history_id"], ["task_history.id"], name=op.f("fk_task_outbox_history_id_task_history"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("history_id", name=op.f("pk_task_outbox")),
    )
    op.create_index("ix_task_outbox_published_at_history_id", "task_outbox", ["published_at", "history_id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_FUNCTION)
        op.execute(PG_TRIGGER)
    else:
        op.execute(SQLITE_TRIGGER)
    # Changes made before the outbox existed are history, not news: they are not published.


def downgrade() -> None:
    op.execute(
        "DROP TRIGGER IF EXISTS task_history_outbox"
        + (" ON task_history" if op.get_bind().dialect.name == "postgresql" else "")
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS task_history_to_outbox()")
    op.drop_index("ix_task_outbox_published_at_history_id", table_name="task_outbox")
    op.drop_table("task_outbox")
