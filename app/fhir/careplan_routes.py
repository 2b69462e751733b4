"""FHIR R4 CarePlan: create, read, versioned update (If-Match), search (`subject`/`patient`, `status`,
`_count`), instance `_history` and vread. The same store and access rules as the REST API
(app/api/care_plans.py): the plan's patient must be in the caller's scope, writes need a facilitator or
supervisor role, and every interaction is audited. Errors are OperationOutcome (app/api/problems.py
renders a Problem under /fhir as one); search follows app/fhir/routes.py (lenient unless
`Prefer: handling=strict`, newest first, opaque `_cursor` paging).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import ColumnElement, false, or_, true
from sqlalchemy.orm.exc import StaleDataError

from app.api.access import patient_condition
from app.api.audit import audit
from app.api.auth import CurrentPrincipal, Principal
from app.api.care_plans import (
    audited_write,
    facility_zone,
    presented,
    require_reader,
    require_writer,
    validated_plan,
    visible_patient,
)
from app.api.problems import Problem
from app.api.request_body import json_body
from app.api.scopes import scoped
from app.careplans.model import CarePlanOut
from app.careplans.versioning import PreconditionError, check_if_match, etag
from app.db.models import CarePlan
from app.fhir.careplan import (
    CarePlanMappingError,
    careplan_from_fhir,
    careplan_resource,
    subject_patient_id,
    validated,
)
from app.fhir.routes import (
    decode_cursor,
    encode_cursor,
    fhir_base,
    fhir_response,
    newest_first_page,
    search_entries,
    searchset,
)
from app.fhir.search import (
    SearchParamError,
    applicable_params,
    handling_preference,
    parse_count,
    parse_reference,
    parse_token,
    split_or,
)
from app.settings import Settings
from app.state import care_plans as store
from app.state.audit import AuditAction, AuditOutcome

router = APIRouter(prefix="/fhir", tags=["fhir"], dependencies=scoped("CarePlan"))  # SMART scope: docs/security.md

REQUEST_STATUS_SYSTEM = "http://hl7.org/fhir/request-status"
SEARCH_PARAMS = ("subject", "patient", "status", "_id")
RESULT_PARAMS = ("_count", "_cursor")
DEFAULT_COUNT = 20
MAX_COUNT = 100
_BODY = {
    "requestBody": {
        "required": True,
        "content": {t: {"schema": {"type": "object"}} for t in ("application/fhir+json", "application/json")},
    }
}


def _audit(
    session: Any,
    principal: Principal,
    request: Request,
    action: AuditAction,
    patient_ids: list[str],
    outcome: AuditOutcome = AuditOutcome.SUCCESS,
) -> None:
    audit(
        session, request, principal, action=action, resource_type="CarePlan", patient_ids=patient_ids, outcome=outcome
    )


def _not_found(resource_id: str) -> Problem:
    return Problem(404, "Not Found", f"CarePlan/{resource_id[:64]} is not known")


def _key(resource_id: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(resource_id)
    except ValueError:
        return None


def _resource_response(plan: CarePlanOut, request: Request, status_code: int = 200) -> JSONResponse:
    headers = {"ETag": etag(plan.version), "Last-Modified": plan.updated_at.strftime("%a, %d %b %Y %H:%M:%S GMT")}
    if status_code == 201:
        headers["Location"] = f"{fhir_base(request)}/CarePlan/{plan.id}/_history/{plan.version}"
    return fhir_response(validated(careplan_resource(plan)), status_code=status_code, headers=headers)


async def _body(request: Request) -> dict[str, Any]:
    body = await json_body(request)  # capped at CARECOORD_HTTP_MAX_BODY_BYTES while it streams
    if not isinstance(body, dict):
        raise Problem(400, "Invalid resource", "the body must be a CarePlan resource", field="resourceType")
    return body


def _mapping_problem(exc: CarePlanMappingError) -> Problem:
    return Problem(
        422 if exc.expression != "resourceType" else 400, "Invalid CarePlan", exc.message, field=exc.expression
    )


@router.post("/CarePlan", status_code=201, summary="Create a CarePlan", openapi_extra=_BODY)
async def create_careplan(request: Request, principal: CurrentPrincipal) -> JSONResponse:
    async with audited_write(request, principal, AuditAction.CREATE, []):
        settings: Settings = request.app.state.settings
        require_writer(principal, settings)
        body = await _body(request)
        try:
            plan = careplan_from_fhir(body)
            patient_id = subject_patient_id(body)
        except CarePlanMappingError as exc:
            raise _mapping_problem(exc) from None
        async with request.app.state.runtime.sessions() as session, session.begin():
            patient = await visible_patient(session, principal, settings, patient_id)
            if patient is None or patient.merged_into_id is not None:
                raise Problem(422, "Invalid CarePlan", "no patient with this id", field="CarePlan.subject")
            plan = await validated_plan(session, principal, settings, patient_id, plan)
            try:
                out = await store.create_plan(
                    session, patient_id, plan, principal.subject, zone=facility_zone(settings)
                )
            except store.ActivePlanExists:
                raise Problem(
                    409, "Conflict", "the patient already has an active CarePlan", field="CarePlan.status"
                ) from None
            _audit(session, principal, request, AuditAction.CREATE, [str(patient_id)])
        return _resource_response(out, request, 201)


@router.get("/CarePlan/{resource_id}", summary="Read a CarePlan")
async def read_careplan(resource_id: str, request: Request, principal: CurrentPrincipal) -> JSONResponse:
    settings: Settings = request.app.state.settings
    require_reader(principal)
    key = _key(resource_id)
    async with request.app.state.runtime.sessions() as session, session.begin():
        row = await store.visible_plan(session, key, patient_condition(principal, settings)) if key else None
        ok = AuditOutcome.SUCCESS if row is not None else AuditOutcome.MINOR_FAILURE
        _audit(session, principal, request, AuditAction.READ, [str(row.patient_id)] if row else [], ok)
        out = (await presented(session, principal, settings, [store.plan_out(row)]))[0] if row is not None else None
    if out is None:
        raise _not_found(resource_id)
    return _resource_response(out, request)


@router.put("/CarePlan/{resource_id}", summary="Update a CarePlan (If-Match required)", openapi_extra=_BODY)
async def update_careplan(
    resource_id: str,
    request: Request,
    principal: CurrentPrincipal,
    if_match: Annotated[str | None, Header(alias="If-Match")] = None,
) -> JSONResponse:
    async with audited_write(request, principal, AuditAction.UPDATE, []):
        settings: Settings = request.app.state.settings
        require_writer(principal, settings)
        body = await _body(request)
        if body.get("id") != resource_id:
            raise Problem(400, "Invalid CarePlan", "the resource id must match the URL", field="CarePlan.id")
        try:
            plan = careplan_from_fhir(body)
            subject = subject_patient_id(body)
        except CarePlanMappingError as exc:
            raise _mapping_problem(exc) from None
        key = _key(resource_id)
        try:
            async with request.app.state.runtime.sessions() as session, session.begin():
                scope = patient_condition(principal, settings)
                row = await store.visible_plan(session, key, scope, for_update=True) if key else None
                if row is None:
                    raise _not_found(resource_id)  # no update-as-create: ids are the server's
                try:
                    check_if_match(if_match, row.version)
                except PreconditionError as exc:
                    title = "Precondition failed" if exc.status == 412 else "Precondition required"
                    raise Problem(exc.status, title, exc.message, field="If-Match") from None
                if subject != row.patient_id:
                    raise Problem(
                        422, "Invalid CarePlan", "a plan cannot move to another patient", field="CarePlan.subject"
                    )
                plan = await validated_plan(session, principal, settings, row.patient_id, plan, store.plan_out(row))
                try:
                    out = await store.update_plan(session, row, plan, principal.subject, zone=facility_zone(settings))
                except store.ActivePlanExists:
                    raise Problem(
                        409, "Conflict", "the patient already has an active CarePlan", field="CarePlan.status"
                    ) from None
                out = (await presented(session, principal, settings, [out]))[0]
                _audit(session, principal, request, AuditAction.UPDATE, [str(row.patient_id)])
        except StaleDataError:
            raise Problem(412, "Precondition failed", "the CarePlan changed meanwhile", field="If-Match") from None
        return _resource_response(out, request)


def _history_entry(base: str, plan: CarePlanOut, action: str, recorded_at: datetime) -> dict[str, Any]:
    resource = validated(careplan_resource(plan))
    created = action == "create"
    return {
        "fullUrl": f"{base}/CarePlan/{plan.id}",
        "resource": resource,
        "request": {"method": "POST" if created else "PUT", "url": "CarePlan" if created else f"CarePlan/{plan.id}"},
        "response": {
            "status": "201 Created" if created else "200 OK",
            "etag": etag(plan.version),
            "lastModified": recorded_at.isoformat(),
        },
    }


@router.get("/CarePlan/{resource_id}/_history", summary="Every version of a CarePlan (history Bundle)")
async def careplan_history(resource_id: str, request: Request, principal: CurrentPrincipal) -> JSONResponse:
    settings: Settings = request.app.state.settings
    require_reader(principal)
    key = _key(resource_id)
    async with request.app.state.runtime.sessions() as session, session.begin():
        row = await store.visible_plan(session, key, patient_condition(principal, settings)) if key else None
        versions = await store.versions_of(session, row.id) if row is not None else []
        snapshots = [CarePlanOut.model_validate(v.snapshot) for v in versions]
        snapshots = await presented(session, principal, settings, snapshots)
        ok = AuditOutcome.SUCCESS if row is not None else AuditOutcome.MINOR_FAILURE
        _audit(session, principal, request, AuditAction.READ, [str(row.patient_id)] if row else [], ok)
    if row is None:
        raise _not_found(resource_id)
    base = fhir_base(request)
    bundle = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "history",
        "total": len(versions),
        "link": [{"relation": "self", "url": f"{base}/CarePlan/{row.id}/_history"}],
        "entry": [
            _history_entry(base, plan, v.action, v.recorded_at) for v, plan in zip(versions, snapshots, strict=True)
        ],
    }
    return fhir_response(bundle)


@router.get("/CarePlan/{resource_id}/_history/{version_id}", summary="Read one version of a CarePlan (vread)")
async def careplan_vread(
    resource_id: str, version_id: str, request: Request, principal: CurrentPrincipal
) -> JSONResponse:
    settings: Settings = request.app.state.settings
    require_reader(principal)
    key = _key(resource_id)
    async with request.app.state.runtime.sessions() as session, session.begin():
        row = await store.visible_plan(session, key, patient_condition(principal, settings)) if key else None
        found, shown = None, None
        if row is not None and version_id.isdigit() and len(version_id) < 10:
            found = await store.version_of(session, row.id, int(version_id))
        if found is not None:
            shown = (await presented(session, principal, settings, [CarePlanOut.model_validate(found.snapshot)]))[0]
        ok = AuditOutcome.SUCCESS if found is not None else AuditOutcome.MINOR_FAILURE
        _audit(session, principal, request, AuditAction.READ, [str(row.patient_id)] if row else [], ok)
    if row is None:
        raise _not_found(resource_id)
    if shown is None:
        raise Problem(404, "Not Found", f"CarePlan/{row.id} has no version {version_id[:20]}")
    return _resource_response(shown, request)


# --- search ---------------------------------------------------------------------------------------


@dataclass
class CarePlanQuery:
    conditions: list[ColumnElement[bool]] = field(default_factory=list)
    applied: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    count: int = DEFAULT_COUNT
    cursor: tuple[datetime, uuid.UUID] | None = None


def _subject_condition(value: str, param: str) -> ColumnElement[bool]:
    ident = parse_reference(value, "Patient", param)
    key = _key(ident)
    return CarePlan.patient_id == key if key is not None else false()


def _status_condition(value: str) -> ColumnElement[bool]:
    token = parse_token(value, "status")
    if token.system not in (None, REQUEST_STATUS_SYSTEM):
        return false()
    return CarePlan.status == token.code if token.code is not None else true()


def _id_condition(value: str) -> ColumnElement[bool]:
    key = _key(value.strip())
    return CarePlan.id == key if key is not None else false()


def parse_careplan_query(items: list[tuple[str, str]], *, strict: bool) -> CarePlanQuery:
    query = CarePlanQuery()
    for name, value in applicable_params(items, (*SEARCH_PARAMS, *RESULT_PARAMS), query.ignored, strict=strict):
        if name == "_count":
            query.count = parse_count(value, DEFAULT_COUNT, MAX_COUNT)
            continue
        if name == "_cursor":
            query.cursor = decode_cursor(value.strip())
            continue
        values = split_or(value)
        if name in ("subject", "patient"):
            condition = or_(*[_subject_condition(v, name) for v in values])
        elif name == "status":
            condition = or_(*[_status_condition(v) for v in values])
        else:
            condition = or_(*[_id_condition(v) for v in values])
        query.conditions.append(condition)
        query.applied.append((name, value))
    return query


def _url(base: str, params: list[tuple[str, str]]) -> str:
    return f"{base}/CarePlan?{urlencode(params)}"


@router.get("/CarePlan", summary="Search CarePlans")
async def search_careplans(
    request: Request,
    principal: CurrentPrincipal,
    subject: Annotated[str | None, Query(description="Patient id, `Patient/id` or URL")] = None,
    patient: Annotated[str | None, Query(description="same as subject")] = None,
    status: Annotated[str | None, Query(description="CarePlan.status (request-status)")] = None,
    count: Annotated[str | None, Query(alias="_count", description=f"page size, max {MAX_COUNT}")] = None,
) -> JSONResponse:
    settings: Settings = request.app.state.settings
    require_reader(principal)
    strict = handling_preference(request.headers.get("prefer")) == "strict"
    try:
        query = parse_careplan_query(list(request.query_params.multi_items()), strict=strict)
    except SearchParamError as exc:
        raise Problem(400, "Invalid search", exc.message, field=exc.param) from None
    conditions = [*query.conditions, store.scoped(patient_condition(principal, settings))]
    async with request.app.state.runtime.sessions() as session, session.begin():
        total, rows, has_next = await newest_first_page(session, CarePlan, conditions, query.cursor, query.count)
        shown = await presented(session, principal, settings, [store.plan_out(r) for r in rows])
        resources = [validated(careplan_resource(p)) for p in shown]
        _audit(session, principal, request, AuditAction.READ, [str(r.patient_id) for r in rows])
    base = fhir_base(request)
    page = [*query.applied, ("_count", str(query.count))]
    self_params = list(page)
    if query.cursor is not None:
        self_params.append(("_cursor", encode_cursor(*query.cursor)))
    links = [{"relation": "self", "url": _url(base, self_params)}]
    if has_next:
        links.append(
            {
                "relation": "next",
                "url": _url(base, [*page, ("_cursor", encode_cursor(rows[-1].created_at, rows[-1].id))]),
            }
        )
    entries = search_entries(base, "CarePlan", resources, query.ignored)
    return fhir_response(searchset(total, links, entries))
