"""Queries behind the dead-letter admin API: list, fetch and settle rows of `rejected_events`.

Status moves only forward, and only from "open": open -> replayed | discarded. Every transition is a
conditional UPDATE (`... WHERE status = 'open'`), so two admins acting on one row at once cannot
both win; the loser sees zero rows updated.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import InboundEvent, PatientIdentifier, RejectedEvent, utcnow
from app.state.value_free import value_free_reason

OPEN = "open"
REPLAYED = "replayed"
DISCARDED = "discarded"
STATUSES = (OPEN, REPLAYED, DISCARDED)

REASON_MAX = 4000  # as record_rejected stores it
FIELD_MAX = 64  # RejectedEvent.field is String(64)


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    """A rejected event without its payload (only the payload's size)."""

    id: uuid.UUID
    source: str
    topic: str | None
    partition: int | None
    offset: int | None
    reason: str
    field: str | None
    status: str
    created_at: datetime
    payload_size: int
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    resolution: str | None = None


@dataclass(frozen=True, slots=True)
class Cursor:
    """Keyset position: the (created_at, id) of the last row of the previous page."""

    created_at: datetime
    id: uuid.UUID


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[DeadLetterRow]
    total: int
    has_more: bool


_SUMMARY_COLUMNS = (
    RejectedEvent.id,
    RejectedEvent.source,
    RejectedEvent.topic,
    RejectedEvent.partition,
    RejectedEvent.offset,
    RejectedEvent.reason,
    RejectedEvent.field,
    RejectedEvent.status,
    RejectedEvent.created_at,
    func.length(RejectedEvent.payload).label("payload_size"),  # bytes, on SQLite BLOB and PostgreSQL bytea
    RejectedEvent.resolved_at,
    RejectedEvent.resolved_by,
    RejectedEvent.resolution,
)


def _filters(status: str | None, source: str | None, topic: str | None) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if status is not None:
        conds.append(RejectedEvent.status == status)
    if source is not None:
        conds.append(RejectedEvent.source == source)
    if topic is not None:
        conds.append(RejectedEvent.topic == topic)
    return conds


async def list_dead_letters(
    session: AsyncSession,
    *,
    status: str | None = None,
    source: str | None = None,
    topic: str | None = None,
    limit: int = 100,
    offset: int = 0,
    after: Cursor | None = None,
) -> Page:
    """Newest first (created_at, then id, descending); `after` continues past a previous page."""
    conds = _filters(status, source, topic)
    total = int(await session.scalar(select(func.count()).select_from(RejectedEvent).where(*conds)) or 0)
    page_conds = list(conds)
    if after is not None:
        page_conds.append(
            or_(
                RejectedEvent.created_at < after.created_at,
                and_(RejectedEvent.created_at == after.created_at, RejectedEvent.id < after.id),
            )
        )
    query = (
        select(*_SUMMARY_COLUMNS)
        .where(*page_conds)
        .order_by(RejectedEvent.created_at.desc(), RejectedEvent.id.desc())
        .offset(offset)
        .limit(limit + 1)
    )
    result = (await session.execute(query)).all()
    rows = [DeadLetterRow(**r._asdict()) for r in result[:limit]]
    return Page(rows=rows, total=total, has_more=len(result) > limit)


async def get_dead_letter(session: AsyncSession, rejected_id: uuid.UUID) -> RejectedEvent | None:
    return await session.get(RejectedEvent, rejected_id)


def summary_of(row: RejectedEvent) -> DeadLetterRow:
    return DeadLetterRow(
        id=row.id,
        source=row.source,
        topic=row.topic,
        partition=row.partition,
        offset=row.offset,
        reason=row.reason,
        field=row.field,
        status=row.status,
        created_at=row.created_at,
        payload_size=len(row.payload),
        resolved_at=row.resolved_at,
        resolved_by=row.resolved_by,
        resolution=row.resolution,
    )


async def _settle(
    session: AsyncSession, rejected_id: uuid.UUID, to_status: str, *, actor: str, resolution: str
) -> bool:
    result = await session.execute(
        update(RejectedEvent)
        .where(RejectedEvent.id == rejected_id, RejectedEvent.status == OPEN)
        .values(status=to_status, resolved_at=utcnow(), resolved_by=actor, resolution=resolution)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


async def mark_replayed(session: AsyncSession, rejected_id: uuid.UUID, *, actor: str, resolution: str) -> bool:
    """open -> replayed; False if the row is not open (any more)."""
    return await _settle(session, rejected_id, REPLAYED, actor=actor, resolution=resolution)


async def mark_discarded(session: AsyncSession, rejected_id: uuid.UUID, *, actor: str, reason: str) -> bool:
    """open -> discarded; False if the row is not open (any more)."""
    return await _settle(session, rejected_id, DISCARDED, actor=actor, resolution=reason)


async def update_rejection(
    session: AsyncSession, rejected_id: uuid.UUID, reason: str, field: str | None, payload: bytes
) -> bool:
    """A replay was rejected again: keep the row open and record why it failed this time.

    `record_rejected` is idempotent per broker position and returns the existing row unchanged,
    so without this the row would keep the reason of its first rejection.
    """
    result = await session.execute(
        update(RejectedEvent)
        .where(RejectedEvent.id == rejected_id, RejectedEvent.status == OPEN)
        .values(reason=value_free_reason(reason, payload)[:REASON_MAX], field=field[:FIELD_MAX] if field else None)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


async def drop_positionless_copies(session: AsyncSession, row: RejectedEvent, since: datetime) -> int:
    """Delete rows a failed replay of a position-less row inserted (same source and bytes, no topic).

    `record_rejected` deduplicates only by broker position, so replaying a row without one would
    leave a second open copy of the same message behind.
    """
    if row.topic is not None:
        return 0
    result = await session.execute(
        delete(RejectedEvent)
        .where(
            RejectedEvent.id != row.id,
            RejectedEvent.topic.is_(None),
            RejectedEvent.source == row.source,
            RejectedEvent.status == OPEN,
            RejectedEvent.created_at >= since,
            RejectedEvent.payload == row.payload,
        )
        .execution_options(synchronize_session=False)
    )
    return result.rowcount


async def patient_id_for_event(session: AsyncSession, event_id: str | uuid.UUID | None) -> str | None:
    if event_id is None:
        return None
    found = await session.scalar(select(InboundEvent.patient_id).where(InboundEvent.id == uuid.UUID(str(event_id))))
    return str(found) if found is not None else None


async def patient_ids_for_identifiers(session: AsyncSession, identifiers: Iterable[tuple[str, str]]) -> list[str]:
    """Known patients named by (system, value) identifiers: for auditing whose data a payload shows."""
    pairs = list(identifiers)
    if not pairs:
        return []
    cond = or_(*[(PatientIdentifier.system == s) & (PatientIdentifier.value == v) for s, v in pairs])
    found = (await session.scalars(select(PatientIdentifier.patient_id).where(cond).distinct())).all()
    return sorted(str(p) for p in found)
