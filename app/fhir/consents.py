"""`GET /fhir/Consent/{id}` and `GET /fhir/Consent?patient=`: recorded Part 2 consents as FHIR R4.

A Part 2 consent itself discloses that a patient is in substance-use treatment, so reading one needs
the Part 2 permission (`part2_roles`) and the patient in the caller's scope; anything else answers as
an unknown id (404) or an empty searchset. Reads and searches are audited.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import func, select

from app.api.access import patient_condition
from app.api.audit import AuditAction, AuditOutcome, audit
from app.api.auth import CurrentPrincipal, Principal, may_see_part2
from app.api.problems import Problem
from app.api.scopes import scoped
from app.db.models import Consent, Patient
from app.fhir.routes import fhir_base, fhir_response, searchset
from app.fhir.search import SearchParamError, parse_count, parse_reference
from app.settings import Settings

router = APIRouter(prefix="/fhir", tags=["fhir"], dependencies=scoped("Consent"))

DEFAULT_COUNT = 20
MAX_COUNT = 100


def _require_part2(principal: Principal, settings: Settings) -> None:
    if not may_see_part2(principal, settings):
        raise Problem(403, "Forbidden", f"reading consents requires one of the roles {settings.part2_roles}")


def _visible(principal: Principal, settings: Settings) -> Any:
    # Part 2 tasks count for the scope: a revoked consent stays readable to the Part 2 holders it concerns.
    return Consent.patient_id.in_(select(Patient.id).where(patient_condition(principal, settings, part2_gate=False)))


@router.get("/Consent/{resource_id}", summary="Read one Part 2 Consent")
async def read_consent(resource_id: str, request: Request, principal: CurrentPrincipal) -> JSONResponse:
    settings: Settings = request.app.state.settings
    _require_part2(principal, settings)
    try:
        key: uuid.UUID | None = uuid.UUID(resource_id)
    except ValueError:
        key = None
    async with request.app.state.runtime.sessions() as session, session.begin():
        row = None
        if key is not None:
            row = (
                await session.execute(select(Consent).where(Consent.id == key, _visible(principal, settings)))
            ).scalar_one_or_none()
        audit(
            session,
            request,
            principal,
            action=AuditAction.READ,
            resource_type="Consent",
            patient_ids=[row.patient_id] if row is not None else [],
            outcome=AuditOutcome.SUCCESS if row is not None else AuditOutcome.MINOR_FAILURE,
        )
    if row is None:
        raise Problem(404, "Not Found", f"Consent/{resource_id[:64]} is not known")
    return fhir_response(_current(row))


def _current(row: Consent) -> dict[str, Any]:
    resource = dict(row.resource)
    resource["status"] = row.status  # superseded by a later record: inactive now
    return resource


@router.get("/Consent", summary="Search Part 2 Consents of one patient")
async def search_consents(
    request: Request,
    principal: CurrentPrincipal,
    patient: Annotated[str | None, Query(description="Patient id, `Patient/id` or URL (required)")] = None,
    count: Annotated[str | None, Query(alias="_count", description=f"page size, max {MAX_COUNT}")] = None,
) -> JSONResponse:
    settings: Settings = request.app.state.settings
    _require_part2(principal, settings)
    try:
        if not patient or not patient.strip():
            raise SearchParamError("patient", "required: searches are per patient")
        ident = parse_reference(patient, "Patient", "patient")
        size = parse_count(count or "", DEFAULT_COUNT, MAX_COUNT)
    except SearchParamError as exc:
        raise Problem(400, "Invalid search", exc.message, field=exc.param) from None
    try:
        patient_id: uuid.UUID | None = uuid.UUID(ident)
    except ValueError:
        patient_id = None
    conditions = [Consent.patient_id == patient_id, _visible(principal, settings)]
    async with request.app.state.runtime.sessions() as session, session.begin():
        rows: list[Consent] = []
        total = 0
        if patient_id is not None:
            total = int(await session.scalar(select(func.count()).select_from(Consent).where(*conditions)) or 0)
            query = select(Consent).where(*conditions).order_by(Consent.recorded_at.desc()).limit(size)
            rows = list((await session.execute(query)).scalars().all())
        audit(
            session,
            request,
            principal,
            action=AuditAction.READ,
            resource_type="Consent",
            patient_ids=[r.patient_id for r in rows],
        )
    base = fhir_base(request)
    links = [{"relation": "self", "url": f"{base}/Consent?{urlencode([('patient', patient), ('_count', size)])}"}]
    entries = [
        {"fullUrl": f"{base}/Consent/{r.id}", "resource": _current(r), "search": {"mode": "match"}} for r in rows
    ]
    return fhir_response(searchset(total, links, entries))
