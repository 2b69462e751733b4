"""The measures in SQL (SQLAlchemy Core; SQLite and PostgreSQL). Each query takes the caller's access
conditions (app/api/access.py) ready-made, so a measure counts and lists exactly the tasks and patients
the API would show that caller: a Part 2 task hidden from them is neither counted nor listed."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    Select,
    Uuid,
    and_,
    case,
    exists,
    false,
    func,
    not_,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import aliased
from sqlalchemy.sql.functions import FunctionElement

from app.db.models import Encounter, FhirResource, Patient, RosterMember, ScreeningEvent, Task, TaskHistory
from app.db.types import UTCDateTime
from app.measures.definitions import (
    CANCELLED,
    CANCELLED_STAY_STATUSES,
    ENTERED_IN_ERROR,
    Anchor,
    MeasureDefinition,
    Part,
)
from app.measures.filters import Instants
from app.state.worklists import status_in
from app.tasks.lifecycle import ACTIVE_STATUSES

COMPLETED = "completed"


class seconds_between(FunctionElement[float]):
    """Seconds from `earlier` to `later` (two timestamp expressions), computed by the database."""

    type = Float()
    inherit_cache = True


@compiles(seconds_between)
def _seconds_pg(element: seconds_between, compiler: Any, **kw: Any) -> str:
    later, earlier = list(element.clauses)
    return f"EXTRACT(EPOCH FROM ({compiler.process(later, **kw)} - {compiler.process(earlier, **kw)}))"


@compiles(seconds_between, "sqlite")
def _seconds_sqlite(element: seconds_between, compiler: Any, **kw: Any) -> str:
    # SQLite keeps UTC as "YYYY-MM-DD HH:MM:SS.ffffff" (app/db/types.py); julianday reads it. Rounded to
    # the millisecond so exactly 7 days compares as 604800, not 604800.00000001.
    later, earlier = list(element.clauses)
    return (
        f"ROUND((julianday({compiler.process(later, **kw)}) - julianday({compiler.process(earlier, **kw)}))"
        " * 86400.0, 3)"
    )


# Aliases for the two roles `encounters` plays in a measure (the stay a task is about, the visit that
# completed it); measures read a stay's Part 2 label from it (stay_part2_label, part2_encounter_label): the task's own
# copy of it (`tasks.encounter_part2`, migration 0016) would add nothing.
Stay = aliased(Encounter, name="stay")  # the hospital stay a task is about
Visit = aliased(Encounter, name="evidence_visit")  # the visit that completed it


class uuid_of_text(FunctionElement[uuid.UUID]):
    """A uuid written as text (a JSON value) in the form the dialect stores Uuid columns, or NULL when
    the text is not one: PostgreSQL a uuid, SQLite 32 hex digits (SQLAlchemy's non-native Uuid)."""

    type = Uuid()
    inherit_cache = True


@compiles(uuid_of_text)
def _uuid_pg(element: uuid_of_text, compiler: Any, **kw: Any) -> str:
    (text_,) = list(element.clauses)
    value = compiler.process(text_, **kw)
    return f"(CASE WHEN {value} ~ '^[0-9a-fA-F-]{{36}}$' THEN CAST({value} AS UUID) END)"


@compiles(uuid_of_text, "sqlite")
def _uuid_sqlite(element: uuid_of_text, compiler: Any, **kw: Any) -> str:
    (text_,) = list(element.clauses)
    return f"lower(replace({compiler.process(text_, **kw)}, '-', ''))"


PATIENT_DISPLAY = (Patient.given_name, Patient.family_name, Patient.birth_date)


def stay_part2_label() -> ColumnElement[bool]:
    """app/api/access.task_part2_label for a query that has joined the task's stay (Stay.id ==
    Task.encounter_id): the same label, read from the joined row instead of a second lookup per task."""
    return or_(Task.part2, Stay.part2)


def part2_encounter_label() -> ColumnElement[bool]:
    """app/api/access.task_part2_label as an EXISTS on the few Part 2 stays (partial index
    ix_encounters_part2): for scans over many tasks (all open work), a probe into a small index, or a
    hashed set, instead of a lookup into every task's stay."""
    return or_(Task.part2, exists(select(Encounter.id).where(Encounter.id == Task.encounter_id, Encounter.part2)))


def last_completed_at(*, performed: bool = False) -> ColumnElement[datetime]:
    """When the task was (last) completed: its history row. A scalar lookup per row, on task_history's
    task_id index. `performed`: when a coded record (a medication-reconciliation Procedure) completed
    it, the record's own time (its `effective_at`), which may be days before it reached us."""
    at: ColumnElement[datetime] = TaskHistory.at
    if performed:
        evidence_id = uuid_of_text(TaskHistory.detail["evidence_event_id"].as_string())
        record_at = select(FhirResource.effective_at).where(FhirResource.id == evidence_id).scalar_subquery()
        at = func.coalesce(record_at, TaskHistory.at, type_=UTCDateTime())
    return (
        select(func.max(at)).where(TaskHistory.task_id == Task.id, TaskHistory.to_status == COMPLETED).scalar_subquery()
    )


def work_done_at() -> ColumnElement[datetime]:
    """When the work happened: the evidence visit's start when a visit completed the task (its message
    may arrive days later), the evidence record's time when a coded record did, else when a person
    completed the task."""
    return func.coalesce(Visit.admit_at, last_completed_at(performed=True), type_=UTCDateTime())


def anchor_column(anchor: Anchor) -> ColumnElement[datetime]:
    match anchor:
        case Anchor.DISCHARGE:
            return Stay.discharge_at
        case Anchor.ADMIT:
            return Stay.admit_at
        case Anchor.RAISED:
            return Task.created_at
    raise AssertionError(anchor)  # pragma: no cover


@dataclass(frozen=True, slots=True)
class CaseConditions:
    """A task measure as SQL: which rows are cases, which are judged (not pending), which succeed."""

    anchor: ColumnElement[datetime]
    denominator: ColumnElement[bool]
    numerator: ColumnElement[bool]
    pending: ColumnElement[bool]
    elapsed: ColumnElement[float] | None  # seconds from anchor to the outcome


def case_conditions(d: MeasureDefinition, now: datetime) -> CaseConditions:
    assert d.task_type is not None and d.anchor is not None
    anchor = anchor_column(d.anchor)
    of_type = and_(Task.type == d.task_type, Task.status != CANCELLED)
    match d.kind.value:
        case "work-within":
            assert d.window_s is not None
            # Still open and its window not yet over: not judged yet, left out of both counts.
            pending = and_(of_type, status_in(ACTIVE_STATUSES), anchor > now - timedelta(seconds=d.window_s))
            elapsed = seconds_between(work_done_at(), anchor)
            numerator = and_(of_type, Task.status == COMPLETED, elapsed <= d.window_s)
            return CaseConditions(anchor, and_(of_type, not_(pending)), numerator, pending, elapsed)
        case "notified-within":
            assert d.window_s is not None
            elapsed = seconds_between(Task.created_at, anchor)
            admitted = and_(Task.type == d.task_type, Stay.status.not_in(CANCELLED_STAY_STATUSES))
            return CaseConditions(anchor, admitted, and_(admitted, elapsed <= d.window_s), false(), elapsed)
        case "loop-closed":
            elapsed = seconds_between(last_completed_at(), anchor)
            numerator = and_(of_type, Task.status == COMPLETED)
            return CaseConditions(anchor, of_type, numerator, and_(of_type, status_in(ACTIVE_STATUSES)), elapsed)
    raise ValueError(f"{d.key} is not a task measure")


@dataclass(frozen=True, slots=True)
class Scope:
    """The caller's task conditions, by the shape of the query they go into (app/measures/service.py
    builds them from app/api/access.py): `joined` for queries that join the task's stay (Part 2 label
    from the joined row), `tasks` for the others."""

    joined: Sequence[ColumnElement[bool]]
    tasks: Sequence[ColumnElement[bool]]


def _task_cases(
    defs: Sequence[MeasureDefinition], period: Instants, scope: Scope, lead: timedelta
) -> tuple[Select[Any], list[ColumnElement[bool]]]:
    """FROM and WHERE shared by measures with one anchor: tasks of their types, not entered in error,
    anchored in the period, in the caller's scope.

    A stay's task is raised when its event is applied, never much before the event's recorded instant:
    `created_at >= period start - lead` lets the database find a period's cases among the tasks raised
    since (index ix_tasks_type_created) rather than probe the tasks of every stay in the period."""
    anchors = {d.anchor for d in defs}
    assert len(anchors) == 1, "measures of one query share their anchor"
    only = next(iter(anchors))
    assert only is not None
    anchor = anchor_column(only)
    query = select().select_from(Task)
    where = [Task.type.in_(sorted({d.task_type for d in defs if d.task_type})), Task.status != ENTERED_IN_ERROR]
    if only is Anchor.RAISED:
        where += list(scope.tasks)
    else:
        query = query.join(Stay, Stay.id == Task.encounter_id)
        where += [Task.created_at >= period.start - lead, *scope.joined]
    if any(d.kind.value == "work-within" for d in defs):
        query = query.outerjoin(Visit, Visit.id == Task.completed_by_encounter_id)
    where += [anchor >= period.start, anchor < period.end]
    return query, where


@dataclass(frozen=True, slots=True)
class Counts:
    numerator: int
    denominator: int
    pending: int


def _count(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


async def task_measure_counts(
    session: AsyncSession,
    defs: Sequence[MeasureDefinition],
    period: Instants,
    scope: Scope,
    now: datetime,
    lead: timedelta,
) -> dict[str, Counts]:
    """Numerator, denominator and pending of several measures sharing an anchor, in one pass."""
    query, where = _task_cases(defs, period, scope, lead)
    columns: list[ColumnElement[int]] = []
    for d in defs:
        c = case_conditions(d, now)
        columns += [_count(and_(c.denominator, c.numerator)), _count(c.denominator), _count(c.pending)]
    row = (await session.execute(query.add_columns(*columns).where(*where))).one()
    return {d.key: Counts(int(row[3 * i]), int(row[3 * i + 1]), int(row[3 * i + 2])) for i, d in enumerate(defs)}


async def elapsed_of_numerator(
    session: AsyncSession,
    d: MeasureDefinition,
    period: Instants,
    scope: Scope,
    now: datetime,
    lead: timedelta,
) -> list[float]:
    """Seconds from anchor to outcome of each numerator case (a loop's days to closure)."""
    c = case_conditions(d, now)
    assert c.elapsed is not None
    query, where = _task_cases([d], period, scope, lead)
    rows = await session.execute(query.add_columns(c.elapsed).where(*where, c.denominator, c.numerator))
    return [float(v) for (v,) in rows.all() if v is not None]


@dataclass(frozen=True, slots=True)
class CaseRow:
    task_id: uuid.UUID
    patient_id: uuid.UUID | None
    event_id: uuid.UUID | None
    given_name: str | None
    family_name: str | None
    birth_date: Any


async def task_measure_rows(
    session: AsyncSession,
    d: MeasureDefinition,
    part: Part,
    period: Instants,
    scope: Scope,
    now: datetime,
    lead: timedelta,
    limit: int,
) -> list[CaseRow]:
    """The tasks (with their patient's display fields) behind a numerator or denominator."""
    c = case_conditions(d, now)
    query, where = _task_cases([d], period, scope, lead)
    wanted = [c.denominator, c.numerator] if part is Part.NUMERATOR else [c.denominator]
    event = Task.encounter_id
    query = (
        query.add_columns(Task.id, Task.patient_id, event, *PATIENT_DISPLAY)
        .outerjoin(Patient, Patient.id == Task.patient_id)
        .where(*where, *wanted)
        .order_by(Patient.family_name, Patient.given_name, Task.patient_id, Task.id)
        .limit(limit)
    )
    return [CaseRow(*row) for row in (await session.execute(query)).all()]


# --- screening reach -------------------------------------------------------------------------------

# An alias, so a roster_members subquery in a caller's condition never correlates to the members counted.
Member = aliased(RosterMember, name="member")


def _targeted_members(
    first_day: Any, last_day: Any, team: str | None, caller_teams: Sequence[str]
) -> list[ColumnElement[bool]]:
    """Members attributed now to one of the caller's teams (the API's attributed-patient scope:
    app/api/access.patient_condition) whose enrollment overlaps the period."""
    conditions = [
        Member.status == "active",
        Member.practice.in_(sorted(caller_teams)) if caller_teams else false(),
        or_(Member.enrollment_start.is_(None), Member.enrollment_start <= last_day),
        or_(Member.enrollment_end.is_(None), Member.enrollment_end >= first_day),
    ]
    if team is not None:
        conditions.append(Member.practice == team)
    return conditions


def _screened_patients(period: Instants, screening_scope: ColumnElement[bool]) -> Select[Any]:
    """Patients with an active screening dated in the period that the caller may see: uncorrelated, so
    PostgreSQL hashes the (small) set once instead of probing it per member."""
    return select(ScreeningEvent.patient_id).where(
        ScreeningEvent.status == "active",
        ScreeningEvent.effective_at >= period.start,
        ScreeningEvent.effective_at < period.end,
        screening_scope,
    )


async def screening_reach_counts(
    session: AsyncSession,
    period: Instants,
    first_day: Any,
    last_day: Any,
    team: str | None,
    caller_teams: Sequence[str],
    screening_scope: ColumnElement[bool],
) -> Counts:
    screened = Member.patient_id.in_(_screened_patients(period, screening_scope))
    query = select(
        func.count(func.distinct(case((screened, Member.patient_id)))), func.count(func.distinct(Member.patient_id))
    ).where(*_targeted_members(first_day, last_day, team, caller_teams))
    row = (await session.execute(query)).one()
    return Counts(int(row[0]), int(row[1]), 0)


async def screening_reach_rows(
    session: AsyncSession,
    part: Part,
    period: Instants,
    first_day: Any,
    last_day: Any,
    team: str | None,
    caller_teams: Sequence[str],
    screening_scope: ColumnElement[bool],
    limit: int,
) -> list[tuple[uuid.UUID, uuid.UUID | None, str | None, str | None, Any]]:
    """(patient id, one screening event id or None, display fields) of the targeted or screened members."""
    first_screen = (
        select(ScreeningEvent.id)
        .where(
            ScreeningEvent.patient_id == Patient.id,
            ScreeningEvent.status == "active",
            ScreeningEvent.effective_at >= period.start,
            ScreeningEvent.effective_at < period.end,
            screening_scope,
        )
        .order_by(ScreeningEvent.effective_at, ScreeningEvent.id)
        .limit(1)
        .scalar_subquery()
    )
    members = select(Member.patient_id).where(*_targeted_members(first_day, last_day, team, caller_teams))
    if part is Part.NUMERATOR:
        members = members.where(Member.patient_id.in_(_screened_patients(period, screening_scope)))
    query = (
        select(Patient.id, first_screen, *PATIENT_DISPLAY)
        .where(Patient.id.in_(members))
        .order_by(Patient.family_name, Patient.given_name, Patient.id)
        .limit(limit)
    )
    return [tuple(r) for r in (await session.execute(query)).all()]  # type: ignore[misc]


# --- open and overdue tasks ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueLoad:
    role: str
    team: str | None
    open: int
    due_soon: int
    overdue: int


async def open_task_load(
    session: AsyncSession, scope: Sequence[ColumnElement[bool]], now: datetime, due_soon: timedelta
) -> list[QueueLoad]:
    overdue = Task.due_at <= now
    soon = and_(Task.due_at > now, Task.due_at <= now + due_soon)
    query = (
        select(Task.role, Task.team, func.count(), _count(soon), _count(overdue))
        .where(status_in(ACTIVE_STATUSES), *scope)
        .group_by(Task.role, Task.team)
        .order_by(Task.role, Task.team)
    )
    return [QueueLoad(r, t, int(n), int(s), int(o)) for r, t, n, s, o in (await session.execute(query)).all()]


async def open_task_rows(
    session: AsyncSession, part: Part, scope: Sequence[ColumnElement[bool]], now: datetime, limit: int
) -> list[CaseRow]:
    wanted = [Task.due_at <= now] if part is Part.NUMERATOR else []
    query = (
        select(Task.id, Task.patient_id, Task.encounter_id, *PATIENT_DISPLAY)
        .outerjoin(Patient, Patient.id == Task.patient_id)
        .where(status_in(ACTIVE_STATUSES), *scope, *wanted)
        .order_by(Patient.family_name, Patient.given_name, Task.patient_id, Task.id)
        .limit(limit)
    )
    return [CaseRow(*row) for row in (await session.execute(query)).all()]
