"""The inbound-event ledger (idempotency) and the rejected-event table (dead letters).

The ledger knows a message by its key (identity + content hash) and by its identity alone (what the
sender calls it: facility + MSH-10, a Bundle id). `ledger_verdict` tells a resend (same key: a no-op)
from a reused identity with other content (applied, and a data-quality finding) from a new message.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import InboundEvent, RejectedEvent, utcnow
from app.state.value_free import value_free_reason

EVENT_ID_NAMESPACE = uuid.UUID("6f1d9b3c-2a4e-5b7d-9c1e-3f5a7b9d1c2e")


def event_id_for(idempotency_key: str) -> uuid.UUID:
    """Deterministic: the id the HTTP ingest returns is the id the consumer stores."""
    return uuid.uuid5(EVENT_ID_NAMESPACE, idempotency_key)


@dataclass(frozen=True, slots=True)
class Position:
    topic: str | None
    partition: int | None
    offset: int | None
    received_at: datetime | None = None  # when the broker took the record (its timestamp), if known


class Verdict(enum.Enum):
    NEW = "new"
    RESEND = "resend"  # this very message was applied before: a no-op
    REUSED = "reused"  # another message was applied under the same identity: apply, and flag it


@dataclass(frozen=True, slots=True)
class Seen:
    verdict: Verdict
    first_event_id: uuid.UUID | None = None  # for REUSED: the first message applied under the identity


async def already_applied(session: AsyncSession, idempotency_key: str) -> bool:
    found = await session.scalar(select(InboundEvent.id).where(InboundEvent.idempotency_key == idempotency_key))
    return found is not None


async def ledger_verdict(session: AsyncSession, idempotency_key: str, message_identity: str) -> Seen:
    """A row applied before identities carried a hash (no `content_hash`) matches by identity alone:
    taken as a resend, so an upgrade never applies an earlier message twice."""
    rows = (
        await session.execute(
            select(InboundEvent.id, InboundEvent.idempotency_key, InboundEvent.content_hash)
            .where(InboundEvent.message_identity == message_identity)
            .order_by(InboundEvent.applied_at, InboundEvent.id)
        )
    ).all()
    if not rows:
        return Seen(Verdict.NEW)
    if any(key == idempotency_key or digest is None for _, key, digest in rows):
        return Seen(Verdict.RESEND)
    return Seen(Verdict.REUSED, rows[0][0])


APPLIED = "applied"
NOT_ACTED_ON = "not-acted-on"  # recorded (a resend is a duplicate) but the event changes nothing here


def record_applied(
    session: AsyncSession,
    *,
    idempotency_key: str,
    source: str,
    message_type: str,
    position: Position,
    patient_id: uuid.UUID | None,
    encounter_id: uuid.UUID | None,
    event_time: datetime | None,
    message_identity: str | None = None,
    content_hash: str | None = None,
    status: str = APPLIED,
) -> InboundEvent:
    """`message_identity` and `content_hash` are given for messages a sender names (v2, Da Vinci);
    FHIR resources are keyed by resource identity and content already and leave them empty."""
    row = InboundEvent(
        id=event_id_for(idempotency_key),
        idempotency_key=idempotency_key,
        message_identity=message_identity,
        content_hash=content_hash,
        source=source,
        message_type=message_type,
        topic=position.topic,
        partition=position.partition,
        offset=position.offset,
        status=status,
        patient_id=patient_id,
        encounter_id=encounter_id,
        event_time=event_time,
        applied_at=utcnow(),
    )
    session.add(row)
    return row


async def record_rejected(
    session: AsyncSession, *, source: str, position: Position, reason: str, field: str | None, payload: bytes
) -> RejectedEvent:
    """Idempotent per broker position, so a redelivered bad message is recorded once."""
    if position.topic is not None:
        existing = await session.scalar(
            select(RejectedEvent).where(
                RejectedEvent.topic == position.topic,
                RejectedEvent.partition == position.partition,
                RejectedEvent.offset == position.offset,
            )
        )
        if existing is not None:
            return existing
    row = RejectedEvent(
        source=source,
        topic=position.topic,
        partition=position.partition,
        offset=position.offset,
        reason=value_free_reason(reason, payload)[:4000],
        field=field[:64] if field else None,
        payload=payload,
    )
    session.add(row)
    return row
