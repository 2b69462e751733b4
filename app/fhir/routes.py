"""FHIR R4 REST endpoints: `GET /fhir/metadata`, `GET /fhir/Encounter/{id}`, `GET /fhir/Encounter?...`.

Access:
- `/fhir/metadata` is public (no patient data; clients discover the server before they log in).
- Encounters need the bearer JWT, a care role (CARECOORD_CARE_ROLES), the SMART scope `Encounter.r`
  (read) / `Encounter.s` (search), and the encounter's patient in the caller's scope (app/api/access.py).
- 42 CFR Part 2 encounters (`part2`) need the Part 2 permission and the patient's active consent.
  Search leaves hidden encounters out silently (and out of `total`); a read of a hidden one answers 404
  exactly like an unknown id, as FHIR's security guidance allows, so the response does not disclose
  that a restricted record exists. The attempt is still audited (outcome 4).
- Every read and search is audited with the patient ids it returned.

Search follows the R4 search framework (see app/fhir/search.py for parameter semantics): repeated
parameters are AND-ed, comma-separated values OR-ed; unknown parameters are ignored (and reported in an
OperationOutcome entry with search.mode `outcome`) unless `Prefer: handling=strict`, which makes them a 400;
a modifier on a known parameter is always a 400 (none are supported). Results are newest first; `_count`
(default 20, at most 100; 0 = total only) sets the page size and the `next` link carries an opaque `_cursor`.
The `self` link lists only the parameters that were applied.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import ColumnElement, and_, false, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from app import clock
from app.api.access import encounter_part2_condition, patient_condition
from app.api.audit import audit
from app.api.auth import CurrentPrincipal, Principal
from app.api.problems import Problem
from app.api.scopes import scoped
from app.db.models import Encounter, Patient
from app.fhir.capability import capability_statement
from app.fhir.encounter import NULL_FLAVOR, encounter_resource
from app.fhir.outcome import FHIR_JSON, operation_outcome
from app.fhir.search import (
    All,
    Cmp,
    Predicate,
    SearchParamError,
    Token,
    applicable_params,
    handling_preference,
    parse_count,
    parse_date_criterion,
    parse_reference,
    parse_token,
    period_predicate,
    split_or,
)
from app.settings import Settings
from app.state.audit import AuditAction, AuditOutcome

router = APIRouter(prefix="/fhir", tags=["fhir"])

ENCOUNTER_STATUS_SYSTEM = "http://hl7.org/fhir/encounter-status"
SEARCH_PARAMS = ("patient", "date", "class", "status")
RESULT_PARAMS = ("_count", "_cursor")
DEFAULT_COUNT = 20
MAX_COUNT = 100


def fhir_response(body: dict[str, Any], status_code: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status_code, media_type=FHIR_JSON, headers=headers)


def fhir_base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/fhir"


def _require_reader(principal: Principal, settings: Settings) -> None:
    if not principal.has_any_role(settings.care_roles):
        raise Problem(403, "Forbidden", f"reading encounters requires one of the roles {settings.care_roles}")


def encounter_scope(principal: Principal, settings: Settings) -> list[ColumnElement[bool]]:
    """The encounters the caller may see: of patients in scope, Part 2 ones only with consent."""
    return [
        Encounter.patient_id.in_(select(Patient.id).where(patient_condition(principal, settings))),
        encounter_part2_condition(principal, settings),
    ]


def _not_found(resource_id: str) -> Problem:
    return Problem(404, "Not Found", f"Encounter/{resource_id[:64]} is not known")


@router.get("/metadata", summary="CapabilityStatement (no authentication)")
async def metadata(request: Request) -> JSONResponse:
    return fhir_response(capability_statement(fhir_base(request)))


@router.get("/Encounter/{resource_id}", summary="Read one Encounter", dependencies=scoped("Encounter"))
async def read_encounter(resource_id: str, request: Request, principal: CurrentPrincipal) -> JSONResponse:
    settings: Settings = request.app.state.settings
    _require_reader(principal, settings)
    try:
        key = uuid.UUID(resource_id)
    except ValueError:
        key = None
    resource: dict[str, Any] | None = None
    headers: dict[str, str] = {}
    async with request.app.state.runtime.sessions() as session, session.begin():
        row = await session.get(Encounter, key) if key is not None else None
        visible = (
            row is not None
            and (
                await session.execute(
                    select(Encounter.id).where(Encounter.id == row.id, *encounter_scope(principal, settings))
                )
            ).first()
            is not None
        )
        if row is not None and visible:
            resource = encounter_resource(row)
            if row.updated_at is not None:
                headers["Last-Modified"] = row.updated_at.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
        audit(
            session,
            request,
            principal,
            action=AuditAction.READ,
            resource_type="Encounter",
            patient_ids=[row.patient_id] if row is not None else [],
            outcome=AuditOutcome.SUCCESS if visible else AuditOutcome.MINOR_FAILURE,
        )
    if resource is None:
        raise _not_found(resource_id)
    return fhir_response(resource, headers=headers)


@dataclass
class EncounterQuery:
    conditions: list[ColumnElement[bool]] = field(default_factory=list)
    applied: list[tuple[str, str]] = field(default_factory=list)  # for the self link
    ignored: list[str] = field(default_factory=list)
    count: int = DEFAULT_COUNT
    cursor: tuple[datetime, uuid.UUID] | None = None


def _compile(predicate: Predicate) -> ColumnElement[bool]:
    if isinstance(predicate, Cmp):
        column = Encounter.admit_at if predicate.field == "start" else Encounter.discharge_at
        compared = column < predicate.value if predicate.op == "<" else column >= predicate.value
        if predicate.if_missing:
            return or_(column.is_(None), compared)
        return and_(column.is_not(None), compared)
    parts = [_compile(p) for p in predicate.parts]
    return and_(*parts) if isinstance(predicate, All) else or_(*parts)


def _token_condition(param: str, token: Token) -> ColumnElement[bool]:
    if param == "status":
        if token.system not in (None, ENCOUNTER_STATUS_SYSTEM):
            return false()
        return Encounter.status == token.code if token.code is not None else true()
    # class: a stored encounter without a class renders as v3 NullFlavor UNK
    if token.code == "UNK" and token.system in (None, NULL_FLAVOR):
        unknown = Encounter.class_code.is_(None)
        if token.system == NULL_FLAVOR:
            return unknown
    else:
        unknown = false()
    if token.system is None:
        matched = Encounter.class_code == token.code
    elif token.system == "":
        matched = and_(Encounter.class_system.is_(None), Encounter.class_code == token.code)
    elif token.code is None:
        matched = Encounter.class_system == token.system
    else:
        matched = and_(Encounter.class_system == token.system, Encounter.class_code == token.code)
    return or_(matched, unknown)


def _patient_condition(value: str) -> ColumnElement[bool]:
    ident = parse_reference(value, "Patient", "patient")
    try:
        return Encounter.patient_id == uuid.UUID(ident)
    except ValueError:
        return false()  # a well-formed id carecoord never issued


def encode_cursor(created_at: datetime, encounter_id: uuid.UUID) -> str:
    raw = f"{created_at.astimezone(UTC).isoformat()}|{encounter_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        stamp, _, ident = raw.partition("|")
        created_at = datetime.fromisoformat(stamp)
        if created_at.tzinfo is None:
            raise ValueError("naive")
        return created_at, uuid.UUID(ident)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise SearchParamError("_cursor", "not a cursor this server issued") from None


def parse_encounter_query(items: list[tuple[str, str]], zone: ZoneInfo, *, strict: bool) -> EncounterQuery:
    query = EncounterQuery()
    for name, value in applicable_params(items, (*SEARCH_PARAMS, *RESULT_PARAMS), query.ignored, strict=strict):
        if name == "_count":
            query.count = parse_count(value, DEFAULT_COUNT, MAX_COUNT)
            continue
        if name == "_cursor":
            query.cursor = decode_cursor(value.strip())
            continue
        values = split_or(value)
        if name == "patient":
            condition = or_(*[_patient_condition(v) for v in values])
        elif name == "date":
            criteria = [parse_date_criterion(v, zone, "date") for v in values]
            has_period = or_(Encounter.admit_at.is_not(None), Encounter.discharge_at.is_not(None))
            condition = and_(has_period, or_(*[_compile(period_predicate(c)) for c in criteria]))
        else:
            condition = or_(*[_token_condition(name, parse_token(v, name)) for v in values])
        query.conditions.append(condition)
        query.applied.append((name, value))
    return query


@router.get("/Encounter", summary="Search Encounters", dependencies=scoped("Encounter"))
async def search_encounters(
    request: Request,
    principal: CurrentPrincipal,
    patient: Annotated[str | None, Query(description="Patient id, `Patient/id` or URL")] = None,
    date: Annotated[list[str] | None, Query(description="Encounter.period with prefix, e.g. ge2026-11-01")] = None,
    class_: Annotated[str | None, Query(alias="class", description="`code` or `system|code`")] = None,
    status: Annotated[str | None, Query(description="Encounter.status")] = None,
    count: Annotated[str | None, Query(alias="_count", description=f"page size, max {MAX_COUNT}")] = None,
) -> JSONResponse:
    # The declared parameters document the API; the query string is parsed below, in full, so that
    # repeats, modifiers and unknown parameters are handled per the FHIR search rules.
    settings: Settings = request.app.state.settings
    _require_reader(principal, settings)
    strict = handling_preference(request.headers.get("prefer")) == "strict"
    try:
        query = parse_encounter_query(
            list(request.query_params.multi_items()), ZoneInfo(settings.facility_timezone), strict=strict
        )
    except SearchParamError as exc:
        raise Problem(400, "Invalid search", exc.message, field=exc.param) from None

    conditions = [*query.conditions, *encounter_scope(principal, settings)]
    async with request.app.state.runtime.sessions() as session, session.begin():
        total, rows, has_next = await newest_first_page(session, Encounter, conditions, query.cursor, query.count)
        resources = [encounter_resource(row) for row in rows]
        audit(
            session,
            request,
            principal,
            action=AuditAction.READ,
            resource_type="Encounter",
            patient_ids=[row.patient_id for row in rows],
        )

    base = fhir_base(request)
    self_params = [*query.applied, ("_count", str(query.count))]
    if query.cursor is not None:
        self_params.append(("_cursor", encode_cursor(*query.cursor)))
    links = [{"relation": "self", "url": _url(base, self_params)}]
    if has_next:
        last = rows[-1]
        cursor = encode_cursor(last.created_at, last.id)
        links.append(
            {"relation": "next", "url": _url(base, [*query.applied, ("_count", str(query.count)), ("_cursor", cursor)])}
        )

    entries = search_entries(base, "Encounter", resources, query.ignored)
    return fhir_response(searchset(total, links, entries))


async def newest_first_page(
    session: AsyncSession,
    model: Any,
    conditions: list[ColumnElement[bool]],
    cursor: tuple[datetime, uuid.UUID] | None,
    count: int,
) -> tuple[int, list[Any], bool]:
    """(total, rows, has_next) of a FHIR search read newest first by (created_at, id), keyset-paged
    after `cursor`: the paging every carecoord-id resource search shares (Encounter, CarePlan, Patient)."""
    total = int(await session.scalar(select(func.count()).select_from(model).where(*conditions)) or 0)
    if count <= 0:
        return total, [], False
    page = list(conditions)
    if cursor is not None:
        at, ident = cursor
        page.append(or_(model.created_at < at, and_(model.created_at == at, model.id < ident)))
    statement = select(model).where(*page).order_by(model.created_at.desc(), model.id.desc()).limit(count + 1)
    rows = list((await session.execute(statement)).scalars().all())
    return total, rows[:count], len(rows) > count


def search_entries(
    base: str, resource_type: str, resources: list[dict[str, Any]], ignored: list[str]
) -> list[dict[str, Any]]:
    """Searchset entries: the matches, then (when parameters were ignored) an OperationOutcome entry
    with search.mode `outcome` naming them, as the R4 search framework asks of a lenient server."""
    entries: list[dict[str, Any]] = [
        {"fullUrl": f"{base}/{resource_type}/{r['id']}", "resource": r, "search": {"mode": "match"}} for r in resources
    ]
    if ignored:
        names = ", ".join(sorted({name[:64] for name in ignored}))
        outcome = operation_outcome(200, f"ignored unknown search parameters: {names}")
        outcome["issue"][0].update(severity="warning", code="not-supported")
        entries.append({"resource": outcome, "search": {"mode": "outcome"}})
    return entries


def searchset(total: int, links: list[dict[str, str]], entries: list[dict[str, Any]]) -> dict[str, Any]:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": clock.now().isoformat()},
        "type": "searchset",
        "total": total,
        "link": links,
    }
    if entries:
        bundle["entry"] = entries
    return bundle


def _url(base: str, params: list[tuple[str, str]]) -> str:
    query = urlencode(params)
    return f"{base}/Encounter?{query}" if query else f"{base}/Encounter"
