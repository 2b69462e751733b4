"""The Part 2 label of a task's encounter, kept on the task by the database.

A task is Part 2 when raised from Part 2 data (`tasks.part2`, set at creation) or when its encounter is
Part 2 now (an A08 can add a substance-use diagnosis or move the stay to a Part 2 unit after the task
was raised). Every task query read the second by a per-row lookup of the encounter: on the worklist's
capped total that was ~500 probes per page, most of the page's database time (bench/api.py). Triggers
now copy `encounters.part2` to `tasks.encounter_part2` when a task is written and whenever an
encounter's label changes, in the same transaction, whatever path made the change (ORM, bulk
statements, COPY); the worklist indexes carry the column, so the total is an index-only scan again.

Rebuilding `tasks` or `encounters` on SQLite (batch_alter_table) drops their triggers: a later migration
that does so must create these again.

Revision ID: 0016_task_encounter_part2
Revises: 0015_worklist_pool_index
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0016_task_encounter_part2"
down_revision: str | None = "0015_worklist_pool_index"
branch_labels = None
depends_on = None

OPEN = "status IN ('accepted', 'in-progress', 'on-hold', 'ready', 'received', 'requested')"
POOL = f"team IS NULL AND {OPEN}"
INCLUDE = {"upgrade": "encounter_id, part2, encounter_part2", "downgrade": "encounter_id, part2"}

PG_STATEMENTS = [
    """
CREATE FUNCTION task_encounter_part2() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- FOR SHARE: an A08 relabelling the encounter waits for this transaction, or this for the A08's.
    NEW.encounter_part2 := COALESCE((SELECT part2 FROM encounters WHERE id = NEW.encounter_id FOR SHARE), false);
    RETURN NEW;
END
$$""",
    """
CREATE FUNCTION encounter_part2_to_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE tasks SET encounter_part2 = NEW.part2
    WHERE encounter_id = NEW.id AND encounter_part2 IS DISTINCT FROM NEW.part2;
    RETURN NULL;
END
$$""",
    """CREATE TRIGGER tasks_encounter_part2 BEFORE INSERT OR UPDATE OF encounter_id ON tasks
    FOR EACH ROW EXECUTE FUNCTION task_encounter_part2()""",
    """CREATE TRIGGER encounters_part2_to_tasks AFTER UPDATE OF part2 ON encounters
    FOR EACH ROW WHEN (OLD.part2 IS DISTINCT FROM NEW.part2) EXECUTE FUNCTION encounter_part2_to_tasks()""",
]
# SQLite row triggers cannot assign NEW: the inserted row is updated after the insert instead.
SQLITE_TASK_SET = """
BEGIN
    UPDATE tasks SET encounter_part2 = COALESCE((SELECT part2 FROM encounters WHERE id = NEW.encounter_id), 0)
    WHERE id = NEW.id;
END
"""
SQLITE_TRIGGERS = [
    f"CREATE TRIGGER tasks_encounter_part2_insert AFTER INSERT ON tasks {SQLITE_TASK_SET}",
    f"CREATE TRIGGER tasks_encounter_part2_update AFTER UPDATE OF encounter_id ON tasks {SQLITE_TASK_SET}",
    """CREATE TRIGGER encounters_part2_to_tasks AFTER UPDATE OF part2 ON encounters
    WHEN OLD.part2 IS NOT NEW.part2
    BEGIN
        UPDATE tasks SET encounter_part2 = NEW.part2 WHERE encounter_id = NEW.id;
    END""",
]
TRIGGERS = {
    "tasks_encounter_part2": "tasks",
    "encounters_part2_to_tasks": "encounters",
    "tasks_encounter_part2_insert": "tasks",
    "tasks_encounter_part2_update": "tasks",
}
BACKFILL = (
    "UPDATE tasks SET encounter_part2 = true "
    "WHERE encounter_id IN (SELECT id FROM encounters WHERE part2) AND NOT encounter_part2"
)


def _postgresql_indexes(direction: str) -> None:
    """Rebuilt CONCURRENTLY beside the old ones, then swapped (as 0015: the running release keeps
    reading and writing `tasks` during a rollout)."""
    with op.get_context().autocommit_block():
        for name, columns, where in (
            ("ix_tasks_open_role_due", "role, team, due_at, id", OPEN),
            ("ix_tasks_open_pool_due", "role, due_at, id", POOL),
        ):
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}_next")
            op.execute(
                f"CREATE INDEX CONCURRENTLY {name}_next ON tasks ({columns}) "
                f"INCLUDE ({INCLUDE[direction]}) WHERE {where}"
            )
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
            op.execute(f"ALTER INDEX {name}_next RENAME TO {name}")


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.add_column("tasks", sa.Column("encounter_part2", sa.Boolean(), server_default=sa.false(), nullable=False))
    for statement in PG_STATEMENTS if postgresql else SQLITE_TRIGGERS:
        op.execute(statement)
    op.execute(BACKFILL.replace("true", "1") if not postgresql else BACKFILL)
    if postgresql:
        _postgresql_indexes("upgrade")


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        _postgresql_indexes("downgrade")
    for name, table in TRIGGERS.items():
        op.execute(f"DROP TRIGGER IF EXISTS {name}" + (f" ON {table}" if postgresql else ""))
    if postgresql:
        op.execute("DROP FUNCTION IF EXISTS task_encounter_part2()")
        op.execute("DROP FUNCTION IF EXISTS encounter_part2_to_tasks()")
    op.drop_column("tasks", "encounter_part2")
