"""What the API and the dashboard call: every measure for a filter and a caller, and the patients
behind one measure's numerator or denominator.

Scoping is the API's (app/api/access.py): task measures count the tasks `task_conditions` lets the
caller see (their roles, or every role for a supervisor; their teams plus the unattributed pool; Part 2
tasks only with the Part 2 permission and the patient's active consent), screening reach the patients
`patient_condition` and the screenings `screening_part2_condition` let them see. The numbers are
therefore the caller's numbers: a Part 2 case hidden from them is in neither count nor list."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.access import patient_condition, screening_part2_condition, task_conditions
from app.api.auth import Principal
from app.db.models import Task, utcnow
from app.measures import queries
from app.measures.arithmetic import days, median, rate
from app.measures.definitions import Anchor, Kind, MeasureDefinition, Part, by_key, definitions
from app.measures.filters import MeasureFilter, period_instants
from app.measures.results import MeasurePatient, MeasureResult
from app.rules.config import load_rules
from app.settings import Settings, get_settings

__all__ = [
    "MeasureContext",
    "MeasureFilter",
    "MeasurePatient",
    "MeasureResult",
    "UnknownMeasure",
    "compute_measures",
    "measure_patients",
]


class UnknownMeasure(KeyError):
    pass


@dataclass(frozen=True)
class MeasureContext:
    """Configuration a computation needs besides the filter: settings (windows, targets, roles), the
    facility clock, the rules' due-soon window, and "now" (fixed by tests)."""

    settings: Settings
    zone: ZoneInfo
    due_soon: timedelta
    now: datetime | None = None

    @classmethod
    def of(cls, runtime: object) -> MeasureContext:
        """From a running app's `request.app.state.runtime` (settings and loaded rules)."""
        settings: Settings = runtime.settings  # type: ignore[attr-defined]
        rules = runtime.rules  # type: ignore[attr-defined]
        return cls(settings, ZoneInfo(settings.facility_timezone), timedelta(hours=rules.lifecycle.due_soon_hours))

    @classmethod
    def from_settings(cls, settings: Settings) -> MeasureContext:
        rules = load_rules(settings.rules_file)
        return cls(settings, ZoneInfo(settings.facility_timezone), timedelta(hours=rules.lifecycle.due_soon_hours))


def _context(context: MeasureContext | None) -> MeasureContext:
    return context if context is not None else MeasureContext.from_settings(get_settings())


def task_scope(principal: Principal, settings: Settings, flt: MeasureFilter) -> list[ColumnElement[bool]]:
    """The caller's task scope (exactly the API's) narrowed by the dashboard's team and role."""
    scope = task_conditions(principal, settings)
    if flt.team is not None:
        scope.append(Task.team == flt.team)
    if flt.role is not None:
        scope.append(Task.role == flt.role)
    return scope


def _result(d: MeasureDefinition, numerator: int, denominator: int, extras: dict[str, object]) -> MeasureResult:
    return MeasureResult(
        key=d.key,
        title=d.title,
        description=d.description,
        unit=d.unit,
        numerator=numerator,
        denominator=denominator,
        rate=rate(numerator, denominator),
        target=d.target,
        numerator_label=d.numerator_label,
        denominator_label=d.denominator_label,
        source=d.source,
        extras=extras,
    )


async def compute_measures(
    session: AsyncSession, flt: MeasureFilter, principal: Principal, *, context: MeasureContext | None = None
) -> list[MeasureResult]:
    """Every dashboard measure, in display order (app/measures/definitions.py)."""
    ctx = _context(context)
    settings, now = ctx.settings, ctx.now or utcnow()
    period = period_instants(flt, ctx.zone)
    scope = task_scope(principal, settings, flt)
    defs = definitions(settings.measures)
    results: dict[str, MeasureResult] = {}

    for anchor in (Anchor.DISCHARGE, Anchor.ADMIT, Anchor.RAISED):
        group = [d for d in defs if d.anchor is anchor]
        if not group:
            continue
        counts = await queries.task_measure_counts(session, group, period, scope, now)
        for d in group:
            c = counts[d.key]
            extras: dict[str, object] = {}
            if d.kind is Kind.WORK_WITHIN:
                extras = {"pending": c.pending, "window_days": d.window_days}
            elif d.kind is Kind.NOTIFIED_WITHIN:
                extras = {"window_hours": (d.window_s or 0) / 3600}
            elif d.kind is Kind.LOOP_CLOSED:
                elapsed = await queries.elapsed_of_numerator(session, d, period, scope, now)
                middle = median(days(s) for s in elapsed)
                extras = {"open": c.pending, "median_days": None if middle is None else round(middle, 2)}
            results[d.key] = _result(d, c.numerator, c.denominator, extras)

    for d in defs:
        if d.kind is Kind.SCREENING_REACH:
            c = await queries.screening_reach_counts(
                session,
                period,
                flt.period_start,
                flt.period_end,
                flt.team,
                patient_condition(principal, settings),
                screening_part2_condition(principal, settings),
            )
            extras = {"role_filter_applied": False} if flt.role is not None else {}
            results[d.key] = _result(d, c.numerator, c.denominator, extras)
        elif d.kind is Kind.OVERDUE:
            load = await queries.open_task_load(session, scope, now, ctx.due_soon)
            overdue, open_ = sum(q.overdue for q in load), sum(q.open for q in load)
            results[d.key] = _result(d, overdue, open_, _load_extras(load, now))
    return [results[d.key] for d in defs]


def _load_extras(load: list[queries.QueueLoad], now: datetime) -> dict[str, object]:
    by_role: dict[str, dict[str, int]] = {}
    for q in load:
        row = by_role.setdefault(q.role, {"open": 0, "due_soon": 0, "overdue": 0})
        row["open"] += q.open
        row["due_soon"] += q.due_soon
        row["overdue"] += q.overdue
    return {
        "as_of": now.isoformat(),
        "by_role": [{"role": role, **counts} for role, counts in sorted(by_role.items())],
        "by_role_team": [
            {"role": q.role, "team": q.team, "open": q.open, "due_soon": q.due_soon, "overdue": q.overdue} for q in load
        ],
    }


def _group(rows: list[queries.CaseRow]) -> list[MeasurePatient]:
    """One entry per patient (rows arrive in display order), with every task and event that put them in."""
    grouped: OrderedDict[uuid.UUID | None, tuple[queries.CaseRow, list[uuid.UUID], list[uuid.UUID]]] = OrderedDict()
    for row in rows:
        _, tasks, events = grouped.setdefault(row.patient_id, (row, [], []))
        tasks.append(row.task_id)
        if row.event_id is not None and row.event_id not in events:
            events.append(row.event_id)
    return [
        MeasurePatient(pid, first.given_name, first.family_name, first.birth_date, tuple(tasks), tuple(events))
        for pid, (first, tasks, events) in grouped.items()
    ]


async def measure_patients(
    session: AsyncSession,
    key: str,
    part: Literal["numerator", "denominator"],
    flt: MeasureFilter,
    principal: Principal,
    *,
    context: MeasureContext | None = None,
    limit: int | None = None,
) -> list[MeasurePatient]:
    """The patients behind `key`'s numerator or denominator, by family and given name. At most `limit`
    case rows are read (default `Settings.measures.drilldown_max`). Raises UnknownMeasure."""
    ctx = _context(context)
    settings, now = ctx.settings, ctx.now or utcnow()
    d = by_key(definitions(settings.measures)).get(key)
    if d is None:
        raise UnknownMeasure(key)
    which = Part(part)
    cap = limit if limit is not None else settings.measures.drilldown_max
    period = period_instants(flt, ctx.zone)
    scope = task_scope(principal, settings, flt)
    if d.kind is Kind.SCREENING_REACH:
        rows = await queries.screening_reach_rows(
            session,
            which,
            period,
            flt.period_start,
            flt.period_end,
            flt.team,
            patient_condition(principal, settings),
            screening_part2_condition(principal, settings),
            cap,
        )
        return [
            MeasurePatient(pid, given, family, born, (), (event,) if event is not None else ())
            for pid, event, given, family, born in rows
        ]
    if d.kind is Kind.OVERDUE:
        return _group(await queries.open_task_rows(session, which, scope, now, cap))
    return _group(await queries.task_measure_rows(session, d, which, period, scope, now, cap))
