"""Tasks record how the routing matrix chose their role and team (GET /tasks/{id}/explain), count
unsuccessful outreach attempts, and when an overdue task was escalated.

Revision ID: 0004_task_routing
Revises: 0003_rosters
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import app.db.types

revision: str = "0004_task_routing"
down_revision: str | None = "0003_rosters"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("route_basis", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("failed_attempts", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("escalated_at", app.db.types.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("escalated_at")
        batch.drop_column("failed_attempts")
        batch.drop_column("route_basis")
