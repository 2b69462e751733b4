"""FHIR R4 Patient: read and search by `identifier` (`system|value`, `value`, `system|`) and `_id`.

Only patients in the caller's scope (app/api/access.py patient_condition) are visible: one outside it
reads as 404 and is left out of search results and totals, like an unknown id. Every read and search
is audited with the patient ids it returned.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import ColumnElement, false, or_, select

from app.api.access import patient_condition
from app.api.audit import audit
from app.api.auth import CurrentPrincipal, Principal
from app.api.problems import Problem
from app.api.scopes import scoped
from app.db.models import Patient, PatientIdentifier
from app.fhir.patient import patient_resource, validated
from app.fhir.routes import (
    decode_cursor,
    encode_cursor,
    fhir_base,
    fhir_response,
    newest_first_page,
    search_entries,
    searchset,
)
from app.fhir.search import SearchParamError, applicable_params, handling_preference, parse_count, parse_token, split_or
from app.settings import Settings
from app.state.audit import AuditAction, AuditOutcome

router = APIRouter(prefix="/fhir", tags=["fhir"], dependencies=scoped("Patient"))  # SMART scope: docs/security.md

SEARCH_PARAMS = ("identifier", "_id")
RESULT_PARAMS = ("_count", "_cursor")
DEFAULT_COUNT = 20
MAX_COUNT = 100


def _require_reader(principal: Principal) -> None:
    if not principal.roles:
        raise Problem(403, "Forbidden", "reading patients needs a role")


def _audit(session: Any, principal: Principal, request: Request, patient_ids: list[str], ok: bool = True) -> None:
    outcome = AuditOutcome.SUCCESS if ok else AuditOutcome.MINOR_FAILURE
    audit(
        session,
        request,
        principal,
        action=AuditAction.READ,
        resource_type="Patient",
        patient_ids=patient_ids,
        outcome=outcome,
    )


def _key(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text.strip())
    except ValueError:
        return None


async def _identifiers(session: Any, patient_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[PatientIdentifier]]:
    found: dict[uuid.UUID, list[PatientIdentifier]] = {pid: [] for pid in patient_ids}
    if patient_ids:
        rows = await session.execute(select(PatientIdentifier).where(PatientIdentifier.patient_id.in_(patient_ids)))
        for ident in rows.scalars():
            found[ident.patient_id].append(ident)
    return found


@router.get("/Patient/{resource_id}", summary="Read a Patient")
async def read_patient(resource_id: str, request: Request, principal: CurrentPrincipal) -> JSONResponse:
    settings: Settings = request.app.state.settings
    _require_reader(principal)
    key = _key(resource_id)
    resource = None
    async with request.app.state.runtime.sessions() as session, session.begin():
        row = None
        if key is not None:
            query = select(Patient).where(Patient.id == key, patient_condition(principal, settings))
            row = (await session.execute(query)).scalar_one_or_none()
        if row is not None:
            resource = validated(patient_resource(row, (await _identifiers(session, [row.id]))[row.id]))
        _audit(session, principal, request, [str(key)] if key else [], ok=row is not None)
    if resource is None:
        raise Problem(404, "Not Found", f"Patient/{resource_id[:64]} is not known")
    return fhir_response(resource)


@dataclass
class PatientQuery:
    conditions: list[ColumnElement[bool]] = field(default_factory=list)
    applied: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    count: int = DEFAULT_COUNT
    cursor: tuple[datetime, uuid.UUID] | None = None


def _identifier_condition(value: str) -> ColumnElement[bool]:
    token = parse_token(value, "identifier")
    match = [PatientIdentifier.patient_id == Patient.id]
    if token.system:
        match.append(PatientIdentifier.system == token.system)
    elif token.system == "":
        return false()  # `|value`: an identifier without a system; carecoord stores none
    if token.code is not None:
        match.append(PatientIdentifier.value == token.code)
    return select(PatientIdentifier.id).where(*match).exists()


def parse_patient_query(items: list[tuple[str, str]], *, strict: bool) -> PatientQuery:
    query = PatientQuery()
    for name, value in applicable_params(items, (*SEARCH_PARAMS, *RESULT_PARAMS), query.ignored, strict=strict):
        if name == "_count":
            query.count = parse_count(value, DEFAULT_COUNT, MAX_COUNT)
            continue
        if name == "_cursor":
            query.cursor = decode_cursor(value.strip())
            continue
        values = split_or(value)
        if name == "identifier":
            condition = or_(*[_identifier_condition(v) for v in values])
        else:
            keys = [_key(v) for v in values]
            condition = or_(*[Patient.id == k if k is not None else false() for k in keys])
        query.conditions.append(condition)
        query.applied.append((name, value))
    return query


def _url(base: str, params: list[tuple[str, str]]) -> str:
    return f"{base}/Patient?{urlencode(params)}"


@router.get("/Patient", summary="Search Patients by identifier or id")
async def search_patients(
    request: Request,
    principal: CurrentPrincipal,
    identifier: Annotated[str | None, Query(description="`system|value`, `value` or `system|`")] = None,
    id_: Annotated[str | None, Query(alias="_id", description="Patient id")] = None,
    count: Annotated[str | None, Query(alias="_count", description=f"page size, max {MAX_COUNT}")] = None,
) -> JSONResponse:
    settings: Settings = request.app.state.settings
    _require_reader(principal)
    strict = handling_preference(request.headers.get("prefer")) == "strict"
    try:
        query = parse_patient_query(list(request.query_params.multi_items()), strict=strict)
    except SearchParamError as exc:
        raise Problem(400, "Invalid search", exc.message, field=exc.param) from None
    conditions = [*query.conditions, patient_condition(principal, settings)]
    async with request.app.state.runtime.sessions() as session, session.begin():
        total, rows, has_next = await newest_first_page(session, Patient, conditions, query.cursor, query.count)
        idents = await _identifiers(session, [r.id for r in rows])
        resources = [validated(patient_resource(r, idents[r.id])) for r in rows]
        _audit(session, principal, request, [str(r.id) for r in rows])
    base = fhir_base(request)
    page = [*query.applied, ("_count", str(query.count))]
    self_params = list(page)
    if query.cursor is not None:
        self_params.append(("_cursor", encode_cursor(*query.cursor)))
    links = [{"relation": "self", "url": _url(base, self_params)}]
    if has_next:
        last = rows[-1]
        links.append(
            {"relation": "next", "url": _url(base, [*page, ("_cursor", encode_cursor(last.created_at, last.id))])}
        )
    entries = search_entries(base, "Patient", resources, query.ignored)
    return fhir_response(searchset(total, links, entries))
