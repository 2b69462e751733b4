"""`GET /fhir/AuditEvent?patient=&agent=&date=`: the audit trail as FHIR R4 AuditEvent, for auditors.

Only `auditor_roles` may search (the trail names every patient anyone looked at). Parameters: `patient`
(a Patient id or reference: events that touched that patient), `agent` (the user id, token `sub`),
`date` (AuditEvent.recorded, with the R4 date prefixes; repeat to AND), `_count` (default 50, at most
200) and the opaque `_cursor` of a `next` link. Newest first. The search itself is audited.

42 CFR Part 2: a Consent record (a consent written or read) tells that the patient has Part 2 data, so
an auditor without the Part 2 permission (`part2_roles`) is given none, exactly like the consents
themselves (app/fhir/consents.py): they are left out of the results and of `total`, not redacted.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import ColumnElement, String, and_, cast, false, func, or_, select

from app.api.audit import AuditAction, audit
from app.api.auth import CurrentPrincipal, may_see_part2
from app.api.problems import Problem
from app.api.scopes import scoped
from app.db.models import AuditEvent
from app.fhir.routes import fhir_base, fhir_response, searchset
from app.fhir.search import (
    All,
    Cmp,
    Predicate,
    SearchParamError,
    parse_count,
    parse_date_criterion,
    parse_reference,
    period_predicate,
)
from app.settings import Settings

router = APIRouter(prefix="/fhir", tags=["fhir"], dependencies=scoped("AuditEvent"))

DEFAULT_COUNT = 50
MAX_COUNT = 200
EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
NETWORK_IP = "2"  # AuditEvent.agent.network.type: IP address
PART2_RESOURCE_TYPES = ("Consent",)  # audit records whose existence is 42 CFR Part 2 data


def audit_event_resource(row: AuditEvent) -> dict[str, Any]:
    """One audit record as an R4 AuditEvent: a RESTful operation by a user (the agent, with roles and
    client address) on patients (entities of type Person, role Patient) through a request (a system
    object entity whose description is the request line)."""
    agent: dict[str, Any] = {
        "who": {"identifier": {"value": row.actor}},
        "requestor": True,
    }
    if row.roles:
        agent["role"] = [{"text": role} for role in row.roles]
    if row.client_ip:
        agent["network"] = {"address": row.client_ip, "type": NETWORK_IP}
    request_entity: dict[str, Any] = {
        "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
        "name": row.resource_type,
        "description": row.request,
    }
    if row.user_agent:
        request_entity["detail"] = [{"type": "user-agent", "valueString": row.user_agent}]
    entities = [
        {
            "what": {"reference": f"Patient/{pid}"},
            "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
            "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
        }
        for pid in row.patient_ids or []
    ]
    return {
        "resourceType": "AuditEvent",
        "id": str(row.id),
        "type": {"system": EVENT_TYPE, "code": "rest", "display": "RESTful Operation"},
        "action": row.action,
        "recorded": row.recorded_at.astimezone(UTC).isoformat(),
        "outcome": row.outcome,
        "agent": [agent],
        "source": {
            "observer": {"display": "carecoord"},
            "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
        "entity": [*entities, request_entity],
    }


def _compile(predicate: Predicate) -> ColumnElement[bool]:
    if isinstance(predicate, Cmp):  # recorded is an instant: period start = end = recorded
        column = AuditEvent.recorded_at
        return column < predicate.value if predicate.op == "<" else column >= predicate.value
    parts = [_compile(p) for p in predicate.parts]
    return and_(*parts) if isinstance(predicate, All) else or_(*parts)


def _patient_condition(value: str) -> ColumnElement[bool]:
    try:
        patient_id = uuid.UUID(parse_reference(value, "Patient", "patient"))
    except ValueError:
        return false()
    # patient_ids is a JSON array of canonical UUID strings: a quoted match is exact and portable
    return cast(AuditEvent.patient_ids, String).like(f'%"{patient_id}"%')


def _cursor(text: str) -> int:
    try:
        return int(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode())
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise SearchParamError("_cursor", "not a cursor this server issued") from None


def _encode_cursor(event_id: int) -> str:
    return base64.urlsafe_b64encode(str(event_id).encode()).decode().rstrip("=")


@router.get("/AuditEvent", summary="Search the audit trail (auditors)")
async def search_audit_events(
    request: Request,
    principal: CurrentPrincipal,
    patient: Annotated[str | None, Query(description="Patient id or `Patient/id`")] = None,
    agent: Annotated[str | None, Query(description="user id (token `sub`)")] = None,
    date: Annotated[list[str] | None, Query(description="AuditEvent.recorded with prefix, e.g. ge2026-11-01")] = None,
    count: Annotated[str | None, Query(alias="_count", description=f"page size, max {MAX_COUNT}")] = None,
    cursor: Annotated[str | None, Query(alias="_cursor", description="from a `next` link")] = None,
) -> JSONResponse:
    settings: Settings = request.app.state.settings
    if not principal.has_any_role(settings.auditor_roles):
        raise Problem(403, "Forbidden", f"the audit trail requires one of the roles {settings.auditor_roles}")
    zone = ZoneInfo(settings.facility_timezone)
    applied: list[tuple[str, str]] = []
    conditions: list[ColumnElement[bool]] = []
    try:
        if patient:
            conditions.append(_patient_condition(patient))
            applied.append(("patient", patient))
        if agent:
            conditions.append(AuditEvent.actor == agent)
            applied.append(("agent", agent))
        for value in date or []:
            conditions.append(_compile(period_predicate(parse_date_criterion(value, zone, "date"))))
            applied.append(("date", value))
        size = parse_count(count or "", DEFAULT_COUNT, MAX_COUNT)
        after = _cursor(cursor) if cursor else None
    except SearchParamError as exc:
        raise Problem(400, "Invalid search", exc.message, field=exc.param) from None

    if not may_see_part2(principal, settings):
        conditions.append(AuditEvent.resource_type.not_in(PART2_RESOURCE_TYPES))
    page_conditions = [*conditions, *([AuditEvent.id < after] if after is not None else [])]
    async with request.app.state.runtime.sessions() as session, session.begin():
        total = int(await session.scalar(select(func.count()).select_from(AuditEvent).where(*conditions)) or 0)
        rows: list[AuditEvent] = []
        if size > 0:
            query = select(AuditEvent).where(*page_conditions).order_by(AuditEvent.id.desc()).limit(size + 1)
            rows = list((await session.execute(query)).scalars().all())
        has_next = len(rows) > size
        rows = rows[:size]
        resources = [audit_event_resource(r) for r in rows]
        audit(
            session,
            request,
            principal,
            action=AuditAction.READ,
            resource_type="AuditEvent",
            patient_ids={p for r in rows for p in r.patient_ids or []},
        )

    base = f"{fhir_base(request)}/AuditEvent"
    self_params = [*applied, ("_count", str(size)), *([("_cursor", cursor)] if cursor else [])]
    links = [{"relation": "self", "url": f"{base}?{urlencode(self_params)}"}]
    if has_next:
        next_params = [*applied, ("_count", str(size)), ("_cursor", _encode_cursor(rows[-1].id))]
        links.append({"relation": "next", "url": f"{base}?{urlencode(next_params)}"})
    entries = [{"fullUrl": f"{base}/{r['id']}", "resource": r, "search": {"mode": "match"}} for r in resources]
    return fhir_response(searchset(total, links, entries))
