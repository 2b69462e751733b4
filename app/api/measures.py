"""Quality measures over HTTP: `GET /measures` (every measure for a period, team and role) and
`GET /measures/{key}/patients` (the patients behind a numerator or denominator). JSON by default,
CSV with `Accept: text/csv` or `format=csv`.

Care roles only; the numbers are the caller's (app/measures/service.py: the API's role, team and
Part 2 scope). Both are audited; a drill-down with the patient ids it listed. SMART: searching Task
(and Patient, for a drill-down's patient list)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from app.api.access import is_supervisor
from app.api.audit import audit
from app.api.auth import CurrentPrincipal, Principal
from app.api.downloads import attachment
from app.api.problems import Problem
from app.api.scopes import scoped
from app.db.models import utcnow
from app.measures.csv_export import measures_csv, patients_csv
from app.measures.filters import FilterError, MeasureFilter, default_period
from app.measures.results import MeasurePatient, MeasureResult
from app.measures.service import MeasureContext, UnknownMeasure, compute_measures, measure_patients
from app.settings import Settings
from app.state.audit import AuditAction

router = APIRouter(tags=["measures"])
CSV_MEDIA = "text/csv; charset=utf-8"
CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "JSON, or CSV when asked for"}
}


class MeasureOut(BaseModel):
    key: str
    title: str
    description: str
    unit: str
    numerator: int
    denominator: int
    rate: float | None
    target: float | None
    meets_target: bool | None
    numerator_label: str
    denominator_label: str
    source: str
    extras: dict[str, Any]
    numerator_patients: str  # drill-down links (same filters)
    denominator_patients: str


class MeasuresOut(BaseModel):
    period_start: date
    period_end: date
    team: str | None
    role: str | None
    timezone: str
    as_of: datetime
    measures: list[MeasureOut]


class MeasurePatientOut(BaseModel):
    patient_id: uuid.UUID | None
    given_name: str | None
    family_name: str | None
    birth_date: date | None
    task_ids: list[uuid.UUID]
    event_ids: list[uuid.UUID]


class MeasurePatientsOut(BaseModel):
    key: str
    part: Literal["numerator", "denominator"]
    period_start: date
    period_end: date
    team: str | None
    role: str | None
    count: int
    truncated: bool  # more cases than `limit`: narrow the filters
    items: list[MeasurePatientOut]


PeriodStart = Annotated[date | None, Query(description="first day (facility clock); default: period_end - 29 days")]
PeriodEnd = Annotated[date | None, Query(description="last day, inclusive; default: today (facility clock)")]
Team = Annotated[str | None, Query(max_length=64, description="one team (practice)")]
Role = Annotated[str | None, Query(max_length=32, description="one task role")]


def _filter(
    request: Request, principal: Principal, start: date | None, end: date | None, team: str | None, role: str | None
) -> MeasureFilter:
    settings: Settings = request.app.state.settings
    if not principal.has_any_role(settings.care_roles):
        raise Problem(403, "Forbidden", f"quality measures require one of the roles {settings.care_roles}")
    today = utcnow().astimezone(ZoneInfo(settings.facility_timezone)).date()
    default_start, default_end = default_period(end or today, settings.measures.default_period_days)
    flt = MeasureFilter(start or default_start, end or default_end, team, role)
    try:
        flt.check(settings.measures.max_period_days)
    except FilterError as exc:
        raise Problem(422, "Request is not valid", str(exc), field=exc.field) from None
    if role is not None and role not in principal.roles and not is_supervisor(principal, settings):
        raise Problem(403, "Forbidden", "you may only measure your own roles' work", field="role")
    if team is not None and team not in principal.teams:
        raise Problem(403, "Forbidden", "you may only measure your own teams' work", field="team")
    return flt


def _wants_csv(request: Request, format_: str | None) -> bool:
    if format_ is not None:
        return format_ == "csv"
    return "text/csv" in request.headers.get("accept", "")


def _links(request: Request, key: str) -> tuple[str, str]:
    query = "&".join(f"{k}={v}" for k, v in request.query_params.multi_items() if k != "format")
    base = f"/measures/{key}/patients?part="
    return (f"{base}numerator{'&' + query if query else ''}", f"{base}denominator{'&' + query if query else ''}")


def _out(request: Request, r: MeasureResult) -> MeasureOut:
    numerator_link, denominator_link = _links(request, r.key)
    return MeasureOut(
        key=r.key,
        title=r.title,
        description=r.description,
        unit=r.unit,
        numerator=r.numerator,
        denominator=r.denominator,
        rate=r.rate,
        target=r.target,
        meets_target=r.meets_target,
        numerator_label=r.numerator_label,
        denominator_label=r.denominator_label,
        source=r.source,
        extras=r.extras,
        numerator_patients=numerator_link,
        denominator_patients=denominator_link,
    )


@router.get(
    "/measures", response_model=MeasuresOut, responses=CSV_RESPONSE, dependencies=scoped("Task", interaction="s")
)
async def list_measures(
    request: Request,
    principal: CurrentPrincipal,
    period_start: PeriodStart = None,
    period_end: PeriodEnd = None,
    team: Team = None,
    role: Role = None,
    format_: Annotated[Literal["json", "csv"] | None, Query(alias="format", description="default: Accept")] = None,
) -> Response:
    """Every dashboard measure (docs/measures.md): numerator, denominator, rate, target and extras."""
    flt = _filter(request, principal, period_start, period_end, team, role)
    context = MeasureContext.of(request.app.state.runtime)
    async with request.app.state.runtime.sessions() as session, session.begin():
        results = await compute_measures(session, flt, principal, context=context)
        audit(session, request, principal, action=AuditAction.READ, resource_type="MeasureReport")
    if _wants_csv(request, format_):
        name = f"measures-{flt.period_start.isoformat()}-{flt.period_end.isoformat()}.csv"
        return Response(
            measures_csv(results, flt),
            media_type=CSV_MEDIA,
            headers={"Content-Disposition": attachment(name)},
        )
    body = MeasuresOut(
        period_start=flt.period_start,
        period_end=flt.period_end,
        team=flt.team,
        role=flt.role,
        timezone=request.app.state.settings.facility_timezone,
        as_of=utcnow(),
        measures=[_out(request, r) for r in results],
    )
    return JSONResponse(body.model_dump(mode="json"))


def _patient_out(p: MeasurePatient) -> MeasurePatientOut:
    return MeasurePatientOut(
        patient_id=p.patient_id,
        given_name=p.given_name,
        family_name=p.family_name,
        birth_date=p.birth_date,
        task_ids=list(p.task_ids),
        event_ids=list(p.event_ids),
    )


def _cut(patients: list[MeasurePatient], cap: int) -> tuple[list[MeasurePatient], bool]:
    """Keep whole patients within `cap` case rows; the service read cap + 1 to tell whether more exist."""
    kept, rows = [], 0
    for p in patients:
        rows += max(1, len(p.task_ids))
        if rows > cap:
            return kept, True
        kept.append(p)
    return kept, False


@router.get(
    "/measures/{key}/patients",
    response_model=MeasurePatientsOut,
    responses=CSV_RESPONSE,
    dependencies=scoped("Task", "Patient", interaction="s"),
)
async def measure_patient_list(
    key: Annotated[str, Path(max_length=64)],
    request: Request,
    principal: CurrentPrincipal,
    part: Annotated[Literal["numerator", "denominator"], Query()] = "denominator",
    period_start: PeriodStart = None,
    period_end: PeriodEnd = None,
    team: Team = None,
    role: Role = None,
    limit: Annotated[int | None, Query(ge=1, description="most case rows; default and cap: the setting")] = None,
    format_: Annotated[Literal["json", "csv"] | None, Query(alias="format", description="default: Accept")] = None,
) -> Response:
    """The patients behind one measure's numerator or denominator, with the task and event ids."""
    flt = _filter(request, principal, period_start, period_end, team, role)
    settings: Settings = request.app.state.settings
    cap = min(limit or settings.measures.drilldown_max, settings.measures.drilldown_max)
    context = MeasureContext.of(request.app.state.runtime)
    async with request.app.state.runtime.sessions() as session, session.begin():
        try:
            found = await measure_patients(session, key, part, flt, principal, context=context, limit=cap + 1)
        except UnknownMeasure:
            raise Problem(404, "Not found", f"no measure {key[:64]!r}", field="key") from None
        patients, truncated = _cut(found, cap)
        audit(
            session,
            request,
            principal,
            action=AuditAction.READ,
            resource_type="Patient",
            patient_ids=[p.patient_id for p in patients],
        )
    if _wants_csv(request, format_):
        name = f"{key}-{part}-{flt.period_start.isoformat()}-{flt.period_end.isoformat()}.csv"
        return Response(
            patients_csv(patients),
            media_type=CSV_MEDIA,
            headers={"Content-Disposition": attachment(name)},
        )
    body = MeasurePatientsOut(
        key=key,
        part=part,
        period_start=flt.period_start,
        period_end=flt.period_end,
        team=flt.team,
        role=flt.role,
        count=len(patients),
        truncated=truncated,
        items=[_patient_out(p) for p in patients],
    )
    return JSONResponse(body.model_dump(mode="json"))
