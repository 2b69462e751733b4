"""A reused control id is a different message: the ledger keeps the sender's identity and a content hash.

`inbound_events.idempotency_key` was the sender's identity alone (facility + MSH-10, a Bundle id), so a
second message reusing a control id was dropped as a resend. The key now carries a content hash too;
`message_identity` (indexed) finds earlier messages under the same identity and `content_hash` says
whether they said the same. Rows applied before this revision get their old key as identity and no
hash: a message matching them is taken as a resend, as before, never applied twice across the upgrade.
`data_quality_findings` lists what was applied but looks wrong, for data staff.

Revision ID: 0017_message_identity
Revises: 0016_task_encounter_part2
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.db.types import UTCDateTime

revision: str = "0017_message_identity"
down_revision: str | None = "0016_task_encounter_part2"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("inbound_events", sa.Column("message_identity", sa.String(512), nullable=True))
    op.add_column("inbound_events", sa.Column("content_hash", sa.String(64), nullable=True))
    op.execute("UPDATE inbound_events SET message_identity = idempotency_key")
    op.create_index(op.f("ix_inbound_events_message_identity"), "inbound_events", ["message_identity"])
    op.create_table(
        "data_quality_findings",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("inbound_event_id", sa.Uuid(), nullable=False),
        sa.Column("related_event_id", sa.Uuid(), nullable=True),
        sa.Column("field", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("topic", sa.String(255), nullable=True),
        sa.Column("partition", sa.Integer(), nullable=True),
        sa.Column("offset", sa.BigInteger(), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_data_quality_findings")),
        sa.UniqueConstraint(
            "inbound_event_id", "kind", "field", name=op.f("uq_data_quality_findings_inbound_event_id_kind_field")
        ),
    )
    op.create_index(op.f("ix_data_quality_findings_kind"), "data_quality_findings", ["kind"])
    op.create_index(op.f("ix_data_quality_findings_created_at"), "data_quality_findings", ["created_at"])


def downgrade() -> None:
    op.drop_table("data_quality_findings")
    op.drop_index(op.f("ix_inbound_events_message_identity"), table_name="inbound_events")
    op.drop_column("inbound_events", "content_hash")
    op.drop_column("inbound_events", "message_identity")
