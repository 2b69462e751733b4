"""Quality-measure indexes (docs/measures.md): a period of stays by discharge or admission instant,
tasks of a type by the day they were raised (covering what the measures read, on PostgreSQL), the few
Part 2 stays, and a practice's attributed members.

Revision ID: 0012_measures
Revises: 0011_outbox
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0012_measures"
down_revision: str | None = "0011_outbox"
branch_labels = None
depends_on = None

# What a measure reads of a task: with these in the index PostgreSQL answers from the index alone.
TASK_MEASURE_COLUMNS = [
    "role",
    "team",
    "status",
    "part2",
    "id",
    "patient_id",
    "encounter_id",
    "completed_by_encounter_id",
]

STAY_MEASURE_COLUMNS = ["id", "part2", "status"]
# The open statuses, as app/db/models.OPEN_TASK_STATUSES_SQL (a migration does not import the models).
OPEN_TASKS = "status IN ('accepted', 'in-progress', 'on-hold', 'ready', 'received', 'requested')"
OPEN_TASK_INDEX_WHERE = {"postgresql_where": sa.text(OPEN_TASKS), "sqlite_where": sa.text(OPEN_TASKS)}

# table -> index name -> (key columns, options)
INDEXES: dict[str, dict[str, tuple[list[str], dict[str, object]]]] = {
    "encounters": {
        "ix_encounters_discharge_at": (["discharge_at"], {"postgresql_include": STAY_MEASURE_COLUMNS}),
        "ix_encounters_admit_at": (["admit_at"], {"postgresql_include": STAY_MEASURE_COLUMNS}),
        "ix_encounters_part2": (["id"], {"postgresql_where": sa.text("part2"), "sqlite_where": sa.text("part2")}),
    },
    "tasks": {
        "ix_tasks_type_created": (
            ["type", "created_at"],
            {"postgresql_include": TASK_MEASURE_COLUMNS},
        ),
        # Open work per team and role (overdue-tasks): the caller's teams' ranges, index-only.
        "ix_tasks_open_team_role": (
            ["team", "role", "due_at"],
            {"postgresql_include": ["part2", "encounter_id", "patient_id"], **OPEN_TASK_INDEX_WHERE},
        ),
    },
    "roster_members": {"ix_roster_members_practice_status": (["practice", "status"], {})},
}


def upgrade() -> None:
    for table, indexes in INDEXES.items():
        with op.batch_alter_table(table) as batch:
            for name, (columns, options) in indexes.items():
                batch.create_index(name, columns, unique=False, **options)


def downgrade() -> None:
    for table, indexes in INDEXES.items():
        with op.batch_alter_table(table) as batch:
            for name in indexes:
                batch.drop_index(name)
