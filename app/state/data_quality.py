"""Data-quality findings: input that was applied but looks wrong, listed for data staff.

Kinds: `control-id-reused` (a second message with other content under an identity already applied:
both are applied) and `event-time-ahead` (a sender time beyond the allowed skew after receipt, clamped
to the receipt time). A finding names the field and the events, never a field value. One row per
(event, kind, field): a redelivered message does not list its finding twice. Findings on a 42 CFR
Part 2 encounter are listed only to callers who may see Part 2 data, so neither the rows nor the
total reveal that such a message exists.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import DataQualityFinding, Encounter, InboundEvent
from app.state.inbound import Position

CONTROL_ID_REUSED = "control-id-reused"
EVENT_TIME_AHEAD = "event-time-ahead"
KINDS = (CONTROL_ID_REUSED, EVENT_TIME_AHEAD)


async def record_finding(
    session: AsyncSession,
    *,
    kind: str,
    source: str,
    event_id: uuid.UUID,
    field: str,
    detail: str,
    position: Position,
    related_event_id: uuid.UUID | None = None,
) -> None:
    exists = await session.scalar(
        select(DataQualityFinding.id).where(
            DataQualityFinding.inbound_event_id == event_id,
            DataQualityFinding.kind == kind,
            DataQualityFinding.field == field,
        )
    )
    if exists is not None:
        return
    session.add(
        DataQualityFinding(
            kind=kind,
            source=source,
            inbound_event_id=event_id,
            related_event_id=related_event_id,
            field=field,
            detail=detail,
            topic=position.topic,
            partition=position.partition,
            offset=position.offset,
        )
    )


@dataclass(frozen=True, slots=True)
class FindingRow:
    id: uuid.UUID
    kind: str
    source: str
    message: str | None  # what the sender calls the message (facility + control id, a Bundle id)
    inbound_event_id: uuid.UUID
    related_event_id: uuid.UUID | None
    field: str
    detail: str
    topic: str | None
    partition: int | None
    offset: int | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class FindingPage:
    rows: list[FindingRow]
    total: int


def _visible(include_part2: bool) -> list[ColumnElement[bool]]:
    if include_part2:
        return []
    part2_events = (
        select(InboundEvent.id)
        .join(Encounter, Encounter.id == InboundEvent.encounter_id)
        .where(Encounter.part2.is_(True))
    )
    return [DataQualityFinding.inbound_event_id.not_in(part2_events)]


async def list_findings(
    session: AsyncSession, *, kind: str | None, include_part2: bool, limit: int, offset: int
) -> FindingPage:
    """Newest first. `include_part2=False` leaves out findings on Part 2 encounters (rows and total)."""
    where = [*_visible(include_part2), *([DataQualityFinding.kind == kind] if kind else [])]
    total = await session.scalar(select(func.count()).select_from(DataQualityFinding).where(*where)) or 0
    rows = (
        await session.execute(
            select(DataQualityFinding, InboundEvent.message_identity)
            .outerjoin(InboundEvent, InboundEvent.id == DataQualityFinding.inbound_event_id)
            .where(*where)
            .order_by(DataQualityFinding.created_at.desc(), DataQualityFinding.id.desc())
            .limit(limit)
            .offset(offset)
        )
    ).all()
    return FindingPage(
        rows=[
            FindingRow(
                id=f.id,
                kind=f.kind,
                source=f.source,
                message=identity,
                inbound_event_id=f.inbound_event_id,
                related_event_id=f.related_event_id,
                field=f.field,
                detail=f.detail,
                topic=f.topic,
                partition=f.partition,
                offset=f.offset,
                created_at=f.created_at,
            )
            for f, identity in rows
        ],
        total=total,
    )
