"""FHIR clinical ingestion and read-back.

- `POST /fhir/{Encounter|Observation|Questionnaire|QuestionnaireResponse}` (one resource) and
  `POST /fhir` (a transaction or batch Bundle), `application/fhir+json`, role `INTEGRATION`: decoded and
  validated exactly as the FHIR consumer will (app/consumers/fhir_decode.py), then published to the FHIR
  topic keyed by patient. 202 with an informational OperationOutcome naming the event id once the
  broker acknowledged; 400 / 422 OperationOutcome naming the element otherwise. Creates are
  conditional on identifier: a resend is accepted again and applied once. What takes the database to
  judge (`Patient/{id}` unknown, a response its registered Questionnaire cannot score) is checked too.
- `GET /fhir/Observation?patient=&code=` and `GET /fhir/QuestionnaireResponse?patient=`: searchset
  Bundles of the stored resources, newest first, audited. `patient` is required so a search is always
  about one patient; care roles only, the patient in the caller's scope, substance-use (Part 2)
  results only with the Part 2 permission and the patient's consent (app/api/access.py).
"""

from __future__ import annotations

import uuid
from datetime import UTC
from functools import partial
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import ColumnElement, false, func, or_, select

from app.api.access import fhir_resource_part2_condition, patient_condition
from app.api.audit import audit
from app.api.auth import CurrentPrincipal
from app.api.problems import Problem
from app.api.request_body import body_cap
from app.api.scopes import scoped
from app.consumers.fhir_decode import CLINICAL_TYPES
from app.db.models import FhirResource, Patient
from app.fhir.process_message import FHIR_MEDIA_TYPES, accepted_response
from app.fhir.routes import fhir_base, fhir_response, searchset
from app.fhir.search import SearchParamError, Token, parse_count, parse_reference, parse_token, split_or
from app.ingest.http_front_door import accept
from app.ingest.publish import publish_fhir
from app.screening.instruments import LOINC
from app.state.audit import AuditAction

router = APIRouter(tags=["fhir"])

DEFAULT_COUNT = 20
MAX_COUNT = 100
_BODY = {"requestBody": {"content": {t: {"schema": {"type": "object"}} for t in FHIR_MEDIA_TYPES}}}


async def _create(request: Request, principal: CurrentPrincipal, resource_type: str) -> JSONResponse:
    path = "/fhir" if resource_type == "Bundle" else f"/fhir/{resource_type}"
    published = await accept(
        request,
        principal,
        media_types=FHIR_MEDIA_TYPES,
        publish=partial(publish_fhir, expect=resource_type),
        invalid_title=f"Invalid {resource_type}",
        request_line=f"POST {path}",
        resource_type=resource_type,
    )
    return accepted_response(published, f"{resource_type} payload")


@router.post(
    "/fhir",
    status_code=202,
    summary="Accept a transaction or batch Bundle of clinical resources",
    openapi_extra=_BODY,
    dependencies=scoped("Bundle", interaction="c"),
)
@body_cap("ingest_max_bytes", decodes_own_json=True)
async def create_bundle(request: Request, principal: CurrentPrincipal) -> JSONResponse:
    return await _create(request, principal, "Bundle")


def _create_route(resource_type: str) -> None:
    @body_cap("ingest_max_bytes", decodes_own_json=True)
    async def create(request: Request, principal: CurrentPrincipal) -> JSONResponse:
        return await _create(request, principal, resource_type)

    router.add_api_route(
        f"/fhir/{resource_type}",
        create,
        methods=["POST"],
        status_code=202,
        summary=f"Accept a {resource_type} (conditional create on identifier)",
        openapi_extra=_BODY,
        name=f"create_{resource_type}",
        dependencies=scoped(resource_type, interaction="c"),
    )


for _type in CLINICAL_TYPES:
    _create_route(_type)


def _patient_id(value: str | None) -> uuid.UUID | None:
    if value is None or not value.strip():
        raise SearchParamError("patient", "required: searches are per patient")
    ident = parse_reference(value, "Patient", "patient")
    try:
        return uuid.UUID(ident)
    except ValueError:
        return None  # a well-formed id carecoord never issued: no matches


def _code_condition(token: Token) -> ColumnElement[bool]:
    if token.system not in (None, LOINC):
        return false()  # only LOINC-coded screening results are stored
    return FhirResource.code == token.code if token.code else FhirResource.code.is_not(None)


def stored_resource(row: FhirResource) -> dict[str, Any]:
    """The resource as received, under carecoord's id and version."""
    resource = dict(row.content)
    resource["id"] = str(row.id)
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(row.version)
    meta["lastUpdated"] = row.updated_at.astimezone(UTC).isoformat()
    resource["meta"] = meta
    return resource


async def _search(request: Request, principal: CurrentPrincipal, resource_type: str, code: str | None) -> JSONResponse:
    settings = request.app.state.settings
    if not principal.has_any_role(settings.care_roles):
        raise Problem(403, "Forbidden", f"reading {resource_type} requires one of the roles {settings.care_roles}")
    try:
        patient_id = _patient_id(request.query_params.get("patient"))
        count = parse_count(request.query_params.get("_count", ""), DEFAULT_COUNT, MAX_COUNT)
        conditions: list[ColumnElement[bool]] = [FhirResource.resource_type == resource_type]
        conditions.append(FhirResource.patient_id == patient_id if patient_id else false())
        if code:
            conditions.append(or_(*[_code_condition(parse_token(v, "code")) for v in split_or(code)]))
        conditions.append(FhirResource.patient_id.in_(select(Patient.id).where(patient_condition(principal, settings))))
        conditions.append(fhir_resource_part2_condition(principal, settings))
    except SearchParamError as exc:
        raise Problem(400, "Invalid search", exc.message, field=exc.param) from None

    async with request.app.state.runtime.sessions() as session, session.begin():
        total = int(await session.scalar(select(func.count()).select_from(FhirResource).where(*conditions)) or 0)
        rows = (
            (
                await session.execute(
                    select(FhirResource)
                    .where(*conditions)
                    .order_by(FhirResource.effective_at.desc(), FhirResource.created_at.desc())
                    .limit(count)
                )
            )
            .scalars()
            .all()
        )
        resources = [stored_resource(r) for r in rows]
        audit(
            session,
            request,
            principal,
            action=AuditAction.READ,
            resource_type=resource_type,
            patient_ids=[r.patient_id for r in rows],
        )
    base = fhir_base(request)
    applied = [(k, v) for k, v in request.query_params.multi_items() if k in ("patient", "code")]
    links = [{"relation": "self", "url": f"{base}/{resource_type}?{urlencode([*applied, ('_count', count)])}"}]
    entries = [
        {"fullUrl": f"{base}/{resource_type}/{r['id']}", "resource": r, "search": {"mode": "match"}} for r in resources
    ]
    return fhir_response(searchset(total, links, entries))


@router.get(
    "/fhir/Observation",
    summary="Search stored screening Observations of one patient",
    dependencies=scoped("Observation"),
)
async def search_observations(
    request: Request,
    principal: CurrentPrincipal,
    patient: Annotated[str | None, Query(description="Patient id, `Patient/id` or URL (required)")] = None,
    code: Annotated[str | None, Query(description="LOINC `code` or `http://loinc.org|code`; comma = OR")] = None,
    count: Annotated[str | None, Query(alias="_count", description=f"page size, max {MAX_COUNT}")] = None,
) -> JSONResponse:
    return await _search(request, principal, "Observation", code)


@router.get(
    "/fhir/QuestionnaireResponse",
    summary="Search stored QuestionnaireResponses of one patient",
    dependencies=scoped("QuestionnaireResponse"),
)
async def search_responses(
    request: Request,
    principal: CurrentPrincipal,
    patient: Annotated[str | None, Query(description="Patient id, `Patient/id` or URL (required)")] = None,
    count: Annotated[str | None, Query(alias="_count", description=f"page size, max {MAX_COUNT}")] = None,
) -> JSONResponse:
    return await _search(request, principal, "QuestionnaireResponse", None)
