"""Access control (issue 6): recorded 42 CFR Part 2 consents, the Part 2 label on tasks, and the
client (address, user agent) of every audit record.

Tasks already raised from a Part 2 encounter are labelled on upgrade, so existing Part 2 work stays gated.

Revision ID: 0010_consent_audit
Revises: 0009_care_plans
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import app.db.types

revision: str = "0010_consent_audit"
down_revision: str | None = "0009_care_plans"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "consents",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("patient_id", sa.Uuid(), nullable=False),
        sa.Column("scope", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("period_start", app.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("period_end", app.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("recorded_by", sa.String(length=255), nullable=False),
        sa.Column("recorded_at", app.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("resource", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"], name=op.f("fk_consents_patient_id_patients")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consents")),
    )
    with op.batch_alter_table("consents") as batch:
        batch.create_index("ix_consents_patient_status", ["patient_id", "status"], unique=False)

    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("client_ip", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("user_agent", sa.String(length=255), nullable=True))

    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("part2", sa.Boolean(), server_default=sa.false(), nullable=False))
    tasks = sa.table("tasks", sa.column("part2", sa.Boolean()), sa.column("encounter_id", sa.Uuid()))
    encounters = sa.table("encounters", sa.column("id", sa.Uuid()), sa.column("part2", sa.Boolean()))
    op.execute(
        tasks.update()
        .where(tasks.c.encounter_id.in_(sa.select(encounters.c.id).where(encounters.c.part2.is_(True))))
        .values(part2=True)
    )


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("part2")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("user_agent")
        batch.drop_column("client_ip")
    with op.batch_alter_table("consents") as batch:
        batch.drop_index("ix_consents_patient_status")
    op.drop_table("consents")
