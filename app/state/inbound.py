"""The inbound-event ledger (idempotency) and the rejected-event table (dead letters)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import InboundEvent, RejectedEvent, utcnow

EVENT_ID_NAMESPACE = uuid.UUID("6f1d9b3c-2a4e-5b7d-9c1e-3f5a7b9d1c2e")


def event_id_for(idempotency_key: str) -> uuid.UUID:
    """Deterministic: the id the HTTP ingest returns is the id the consumer stores."""
    return uuid.uuid5(EVENT_ID_NAMESPACE, idempotency_key)


@dataclass(frozen=True, slots=True)
class Position:
    topic: str | None
    partition: int | None
    offset: int | None


async def already_applied(session: AsyncSession, idempotency_key: str) -> bool:
    found = await session.scalar(select(InboundEvent.id).where(InboundEvent.idempotency_key == idempotency_key))
    return found is not None


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
    status: str = APPLIED,
) -> InboundEvent:
    row = InboundEvent(
        id=event_id_for(idempotency_key),
        idempotency_key=idempotency_key,
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
        reason=reason[:4000],
        field=field[:64] if field else None,
        payload=payload,
    )
    session.add(row)
    return row
