"""Dead-letter administration: list, read, replay and discard rows of `rejected_events`.

Payloads are exact inbound messages, i.e. patient data: only `admin_roles` may use these endpoints,
a payload with 42 CFR Part 2 content (or one that cannot be decoded, so cannot be ruled out) is shown
only to an admin who also holds the Part 2 permission (403 naming `payload` otherwise; listing, replay
and discard stay open since they show no payload), and every call is audited (R for reads, E for a
replay, U for a discard). A replay runs the stored
bytes through the consumer's own handler at the row's original broker position, so it is exactly
as idempotent as a redelivery: applying an already-applied message is a harmless duplicate.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import uuid
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, StringConstraints
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.access import part2_instrument_codes
from app.api.auth import Principal, may_see_part2, role_gate
from app.api.part2_payloads import payload_is_part2
from app.api.problems import Problem
from app.api.request_body import decode_cursor
from app.consumers.notice_handler import Outcome
from app.consumers.transient import is_transient
from app.db.models import RejectedEvent, utcnow
from app.state.audit import AuditAction, AuditOutcome, record_audit
from app.state.dead_letters import (
    OPEN,
    REPLAYED,
    Cursor,
    DeadLetterRow,
    drop_positionless_copies,
    get_dead_letter,
    list_dead_letters,
    mark_discarded,
    mark_replayed,
    patient_id_for_event,
    patient_ids_for_identifiers,
    summary_of,
    update_rejection,
)
from app.state.inbound import Position
from app.state.value_free import value_free_reason

log = logging.getLogger(__name__)
router = APIRouter(tags=["dead letters"])

PATH = "/admin/dead-letters"
AUDIT_RESOURCE = "RejectedEvent"


AdminPrincipal = Annotated[Principal, Depends(role_gate("admin_roles", what="dead letters"))]


class DeadLetterOut(BaseModel):
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


class DeadLetterDetail(DeadLetterOut):
    payload: str
    encoding: Literal["utf-8", "base64"]


class DeadLetterList(BaseModel):
    items: list[DeadLetterOut]
    count: int
    total: int
    next_cursor: str | None


class ReplayResult(BaseModel):
    id: uuid.UUID
    status: Literal["replayed"]
    outcome: Literal["applied", "duplicate"]
    event_id: uuid.UUID | None
    tasks_created: int
    tasks_cancelled: int


class DiscardRequest(BaseModel):
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]


def _out(row: DeadLetterRow) -> DeadLetterOut:
    return DeadLetterOut.model_validate(row, from_attributes=True)


def _encode_cursor(row: DeadLetterRow) -> str:
    raw = json.dumps({"t": row.created_at.isoformat(), "id": str(row.id)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(value: str) -> Cursor:
    try:
        raw = decode_cursor(value)
        created_at = datetime.fromisoformat(raw["t"])
        if created_at.tzinfo is None:
            raise ValueError("naive cursor time")
        return Cursor(created_at=created_at, id=uuid.UUID(raw["id"]))
    except (ValueError, TypeError, KeyError, binascii.Error):
        raise Problem(422, "Request is not valid", "cursor is not one this API returned", field="cursor") from None


def _payload_text(payload: bytes) -> tuple[str, Literal["utf-8", "base64"]]:
    try:
        return payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(payload).decode("ascii"), "base64"


async def _patients_in_payload(request: Request, session: AsyncSession, row: RejectedEvent) -> list[str]:
    """Best effort, for the audit trail: the known patients a payload names (none if undecodable)."""
    handler = request.app.state.runtime.handler_for(row.source)
    if handler is None:
        return []
    payload = row.payload
    try:
        msg = handler.decode(payload)
    except Exception:  # a dead letter is by definition input the decoder may choke on
        return []
    named = msg.named_identifiers  # a merge (A40) also names the prior records, of every PID/MRG group
    return await patient_ids_for_identifiers(session, [(i.system, i.value) for i in named])


def _may_read_payload(request: Request, principal: Principal, row: RejectedEvent) -> bool:
    settings = request.app.state.settings
    if may_see_part2(principal, settings):
        return True
    runtime = request.app.state.runtime
    handler = runtime.handler_for(row.source)
    return not payload_is_part2(
        handler.decode if handler is not None else None,
        row.payload,
        runtime.sensitivity_policy(),
        part2_instrument_codes(settings),
    )


async def _load(request: Request, rejected_id: uuid.UUID) -> RejectedEvent:
    async with request.app.state.runtime.sessions() as session:
        row = await get_dead_letter(session, rejected_id)
    if row is None:
        raise Problem(404, "Not found", f"no dead letter {rejected_id}", field="id")
    return row


def _not_open(row_id: uuid.UUID, status: str) -> Problem:
    return Problem(
        409,
        "Conflict",
        f"dead letter {row_id} is already {status}; only open ones can change",
        dead_letter_status=status,
    )


@router.get(PATH, response_model=DeadLetterList)
async def list_dead_letters_endpoint(
    request: Request,
    principal: AdminPrincipal,
    status: Annotated[Literal["open", "replayed", "discarded"] | None, Query(description="row status")] = None,
    source: Annotated[str | None, Query(max_length=32, description="e.g. hl7v2")] = None,
    topic: Annotated[str | None, Query(max_length=255, description="broker topic the message came from")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1, description="rows to skip (or use cursor)")] = 0,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> DeadLetterList:
    if cursor is not None and offset:
        raise Problem(422, "Request is not valid", "use either cursor or offset, not both", field="cursor")
    after = _decode_cursor(cursor) if cursor is not None else None
    async with request.app.state.runtime.sessions() as session, session.begin():
        page = await list_dead_letters(
            session, status=status, source=source, topic=topic, limit=limit, offset=offset, after=after
        )
        filters = " ".join(f"{k}={v}" for k, v in (("status", status), ("source", source), ("topic", topic)) if v)
        record_audit(
            session,
            principal.subject,
            principal.roles,
            action=AuditAction.READ,
            resource_type=AUDIT_RESOURCE,
            request=f"GET {PATH} {filters}".rstrip(),
        )
    items = [_out(r) for r in page.rows]
    next_cursor = _encode_cursor(page.rows[-1]) if page.has_more and page.rows else None
    return DeadLetterList(items=items, count=len(items), total=page.total, next_cursor=next_cursor)


@router.get(PATH + "/{rejected_id}", response_model=DeadLetterDetail)
async def get_dead_letter_endpoint(
    request: Request, principal: AdminPrincipal, rejected_id: uuid.UUID
) -> DeadLetterDetail:
    async with request.app.state.runtime.sessions() as session, session.begin():
        row = await get_dead_letter(session, rejected_id)
        if row is None:
            raise Problem(404, "Not found", f"no dead letter {rejected_id}", field="id")
        withheld = not _may_read_payload(request, principal, row)
        record_audit(
            session,
            principal.subject,
            principal.roles,
            action=AuditAction.READ,
            resource_type=AUDIT_RESOURCE,
            request=f"GET {PATH}/{rejected_id}",
            patient_ids=await _patients_in_payload(request, session, row),
            outcome=AuditOutcome.MINOR_FAILURE if withheld else AuditOutcome.SUCCESS,
            client_ip=request.client.host if request.client else None,
            user_agent=request.headers.get("user-agent"),
        )
    if withheld:
        raise Problem(
            403,
            "Forbidden",
            "this payload may hold 42 CFR Part 2 data; reading it needs the Part 2 permission",
            field="payload",
        )
    payload, encoding = _payload_text(row.payload)
    return DeadLetterDetail(**_out(summary_of(row)).model_dump(), payload=payload, encoding=encoding)


@router.post(PATH + "/{rejected_id}/replay", response_model=ReplayResult)
async def replay_dead_letter(request: Request, principal: AdminPrincipal, rejected_id: uuid.UUID) -> ReplayResult:
    runtime = request.app.state.runtime
    row = await _load(request, rejected_id)
    if row.status != OPEN:
        raise _not_open(row.id, row.status)
    handler = runtime.handler_for(row.source)
    if handler is None:
        raise Problem(409, "Conflict", f"no replay handler for source {row.source!r}", field="source")

    # The original position: the applied event records where it really came from, and a renewed
    # rejection finds this very row in record_rejected instead of inserting another.
    position = Position(row.topic, row.partition, row.offset, row.created_at)
    started = utcnow()
    try:
        result = await handler.handle(row.payload, position)
    except Exception as exc:
        if not is_transient(exc):
            raise
        log.warning("replay failed on a transient error", extra={"rejected_id": str(row.id)})
        raise Problem(
            503, "Database unavailable", "nothing was replayed; retry later", headers={"Retry-After": "5"}
        ) from None
    request_line = f"POST {PATH}/{row.id}/replay outcome={result.outcome.value}"

    if result.outcome is Outcome.REJECTED:
        reason = value_free_reason(result.reason or "rejected", row.payload)  # as stored: no field values
        async with runtime.sessions() as session, session.begin():
            await drop_positionless_copies(session, row, since=started)
            await update_rejection(session, row.id, reason, result.field, row.payload)
            record_audit(
                session,
                principal.subject,
                principal.roles,
                action=AuditAction.EXECUTE,
                resource_type=AUDIT_RESOURCE,
                request=request_line,
                patient_ids=await _patients_in_payload(request, session, row),
                outcome=AuditOutcome.MINOR_FAILURE,
            )
        log.info("dead letter replay rejected again", extra={"rejected_id": str(row.id), "field": result.field})
        raise Problem(409, "Replay rejected", reason, field=result.field, reason=reason, outcome=result.outcome.value)

    async with runtime.sessions() as session, session.begin():
        marked = await mark_replayed(
            session, row.id, actor=principal.subject, resolution=f"{result.outcome.value} as event {result.event_id}"
        )
        patient_id = await patient_id_for_event(session, result.event_id)
        record_audit(
            session,
            principal.subject,
            principal.roles,
            action=AuditAction.EXECUTE,
            resource_type=AUDIT_RESOURCE,
            request=f"{request_line} event={result.event_id}",
            patient_ids=[patient_id] if patient_id else [],
        )
    if not marked:  # settled by a concurrent request; the handler made our attempt a no-op or the same effect
        async with runtime.sessions() as session:
            now = await get_dead_letter(session, row.id)
        raise _not_open(row.id, now.status if now else "gone")
    log.info(
        "dead letter replayed",
        extra={"rejected_id": str(row.id), "event_id": result.event_id, "outcome": result.outcome.value},
    )
    return ReplayResult(
        id=row.id,
        status=REPLAYED,
        outcome=result.outcome.value,
        event_id=uuid.UUID(result.event_id) if result.event_id else None,
        tasks_created=result.tasks_created,
        tasks_cancelled=result.tasks_cancelled,
    )


@router.post(PATH + "/{rejected_id}/discard", response_model=DeadLetterOut)
async def discard_dead_letter(
    request: Request, principal: AdminPrincipal, rejected_id: uuid.UUID, body: DiscardRequest
) -> DeadLetterOut:
    async with request.app.state.runtime.sessions() as session, session.begin():
        row = await get_dead_letter(session, rejected_id)
        if row is None:
            raise Problem(404, "Not found", f"no dead letter {rejected_id}", field="id")
        if not await mark_discarded(session, row.id, actor=principal.subject, reason=body.reason):
            await session.refresh(row)
            raise _not_open(row.id, row.status)
        record_audit(
            session,
            principal.subject,
            principal.roles,
            action=AuditAction.UPDATE,
            resource_type=AUDIT_RESOURCE,
            request=f"POST {PATH}/{row.id}/discard reason={body.reason}",
        )
        await session.refresh(row)
        return _out(summary_of(row))
