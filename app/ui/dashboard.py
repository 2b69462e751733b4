"""`/ui/dashboard`: the quality measures (app/measures) for a period, team and role, one SVG chart per
measure, drill-down from a numerator or denominator to its patients, and CSV exports. The numbers are
the caller's: app/measures/service scopes them with the API's access conditions (roles, teams, Part 2);
each view is audited, a drill-down with the patients it lists."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query, Request, Response
from markupsafe import Markup

from app.api.audit import audit
from app.api.auth import Principal
from app.api.downloads import attachment
from app.api.problems import Problem
from app.db.models import utcnow
from app.measures.charts import chart_for
from app.measures.csv_export import measures_csv, patients_csv
from app.measures.filters import FilterError, MeasureFilter
from app.measures.results import MeasurePatient, MeasureResult
from app.measures.service import MeasureContext, UnknownMeasure, compute_measures, measure_patients
from app.settings import Settings
from app.state.audit import AuditAction
from app.ui.rendering import UiRoute, render
from app.ui.session import UI_PATH, UiPrincipal, require_scope

router = APIRouter(prefix=UI_PATH, route_class=UiRoute, include_in_schema=False)
DEFAULT_PERIOD_DAYS = 30
RESOURCE = "MeasureReport"  # what an audit record of a measure view names (FHIR's resource for measure results)
Part = Literal["numerator", "denominator"]
CSV = "text/csv; charset=utf-8"


PeriodStart = Annotated[date | None, Query(description="first day (facility clock)")]
PeriodEnd = Annotated[date | None, Query(description="last day, inclusive")]
Team = Annotated[str | None, Query(max_length=255)]
Role = Annotated[str | None, Query(max_length=64)]


def _filter(
    request: Request,
    period_start: PeriodStart = None,
    period_end: PeriodEnd = None,
    team: Team = None,
    role: Role = None,
) -> MeasureFilter:
    """The page's filter (a dependency of every dashboard route); by default the last 30 days to today
    on the facility clock."""
    settings: Settings = request.app.state.settings
    today = utcnow().astimezone(ZoneInfo(settings.facility_timezone)).date()
    end = period_end or today
    flt = MeasureFilter(
        period_start or end - timedelta(days=DEFAULT_PERIOD_DAYS - 1),
        end,
        team.strip() if team and team.strip() else None,
        role.strip() if role and role.strip() else None,
    )
    try:
        flt.check()
    except FilterError as exc:
        raise Problem(422, "Request is not valid", str(exc), field=exc.field) from None
    return flt


def _require_reader(request: Request, principal: Principal) -> None:
    """Measures count tasks: who may search tasks may see their own numbers."""
    if not principal.roles:
        raise Problem(403, "Forbidden", "the dashboard needs a role")
    require_scope(request, principal, "Task", "s")


async def _measures(request: Request, principal: Principal, flt: MeasureFilter) -> list[MeasureResult]:
    runtime = request.app.state.runtime
    async with runtime.sessions() as session, session.begin():
        results = await compute_measures(session, flt, principal, context=MeasureContext.of(runtime))
        audit(session, request, principal, action=AuditAction.READ, resource_type=RESOURCE)
    return results


async def _patients(
    request: Request, principal: Principal, key: str, part: Part, flt: MeasureFilter
) -> list[MeasurePatient]:
    runtime = request.app.state.runtime
    async with runtime.sessions() as session, session.begin():
        try:
            patients = await measure_patients(session, key, part, flt, principal, context=MeasureContext.of(runtime))
        except UnknownMeasure:
            raise Problem(404, "Not Found", "no such measure", field="key") from None
        audit(
            session, request, principal, action=AuditAction.READ, resource_type=RESOURCE,
            patient_ids=[p.patient_id for p in patients],
        )  # fmt: skip
    return patients


def _params(flt: MeasureFilter) -> dict[str, str]:
    shown = {"period_start": flt.period_start.isoformat(), "period_end": flt.period_end.isoformat()}
    shown.update({k: v for k, v in (("team", flt.team), ("role", flt.role)) if v})
    return shown


PageFilter = Annotated[MeasureFilter, Depends(_filter)]


@router.get("/dashboard", summary="Quality dashboard")
async def dashboard(
    request: Request,
    principal: UiPrincipal,
    flt: PageFilter,
) -> Response:
    _require_reader(request, principal)
    results = await _measures(request, principal, flt)
    settings: Settings = request.app.state.settings
    return render(
        request,
        "dashboard.html",
        {
            "flt": flt,
            "params": _params(flt),
            "measures": [(r, Markup(chart_for(r))) for r in results],  # noqa: S704 - built by app/measures/charts, which escapes every text
            "team_choices": sorted(principal.teams),
            "role_choices": sorted({*principal.roles, *settings.care_plan_writer_roles}),
        },
    )


@router.get("/dashboard/measures.csv", summary="The dashboard's measures as CSV")
async def dashboard_csv(
    request: Request,
    principal: UiPrincipal,
    flt: PageFilter,
) -> Response:
    _require_reader(request, principal)
    body = measures_csv(await _measures(request, principal, flt), flt)
    name = f"measures-{flt.period_start}-{flt.period_end}.csv"
    return Response(body, media_type=CSV, headers={"Content-Disposition": attachment(name)})


# Before the page route: "/dashboard/{key}/{part}" would otherwise take "numerator.csv" as the part.
@router.get("/dashboard/{key}/{part}.csv", summary="A drill-down list as CSV")
async def drill_down_csv(
    request: Request,
    principal: UiPrincipal,
    key: str,
    part: Part,
    flt: PageFilter,
) -> Response:
    _require_reader(request, principal)
    body = patients_csv(await _patients(request, principal, key, part, flt))
    name = f"{key}-{part}-{flt.period_start}-{flt.period_end}.csv"
    return Response(body, media_type=CSV, headers={"Content-Disposition": attachment(name)})


@router.get("/dashboard/{key}/{part}", summary="The patients behind a measure's numerator or denominator")
async def drill_down(
    request: Request,
    principal: UiPrincipal,
    key: str,
    part: Part,
    flt: PageFilter,
) -> Response:
    _require_reader(request, principal)
    patients = await _patients(request, principal, key, part, flt)
    return render(
        request,
        "drill_down.html",
        {"key": key, "part": part, "patients": patients, "params": _params(flt), "flt": flt},
    )
