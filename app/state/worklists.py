"""Worklist queries over tasks: filters, keyset pages, capped totals and the queue summary.

Shared by `GET /tasks`, `GET /worklists/...` and FHIR Task search, so one set of indexes serves all
three (migration 0008_worklists; docs/worklists.md). Callers add the access conditions
(app/api/access.task_conditions); nothing here knows who is asking.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Row,
    Select,
    and_,
    bindparam,
    case,
    false,
    func,
    literal,
    or_,
    select,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Patient, Task
from app.db.ordered_union import ordered_union, union_count
from app.tasks.lifecycle import ACTIVE_STATUSES, PRIORITIES
from app.tasks.worklist import Cursor, Order, SortKey, sort_key_of


def status_in(statuses: Sequence[str]) -> ColumnElement[bool]:
    """`status IN (...)` with the values inlined: PostgreSQL can then prove the partial open-task
    indexes apply even under a generic prepared-statement plan."""
    return Task.status.in_(bindparam("statuses", sorted(set(statuses)), expanding=True, literal_execute=True))


PRIORITY_RANK = case({p: i for i, p in enumerate(PRIORITIES)}, value=Task.priority, else_=0)


@dataclass
class TaskFilters:
    """Each list is OR-ed within, the filters AND-ed; an empty list does not filter."""

    statuses: list[str] = field(default_factory=lambda: list(ACTIVE_STATUSES))
    roles: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    teams: list[str] = field(default_factory=list)
    unassigned_team: bool = False  # also match tasks with no team (the unattributed pool)
    owners: list[str] = field(default_factory=list)
    unowned: bool = False  # also match tasks nobody has claimed
    patients: list[uuid.UUID] = field(default_factory=list)
    due_before: datetime | None = None  # due_at < this
    due_after: datetime | None = None  # due_at >= this
    overdue: bool | None = None  # due_at <= now (open tasks are what timeliness applies to)
    due_soon: bool | None = None  # now < due_at <= now + due_soon window
    extra: list[ColumnElement[bool]] = field(default_factory=list)  # e.g. FHIR date criteria


def filter_conditions(filters: TaskFilters, now: datetime, due_soon: timedelta) -> list[ColumnElement[bool]]:
    return [
        *task_filter_conditions(
            statuses=filters.statuses,
            roles=sorted(set(filters.roles)),
            types=sorted(set(filters.types)),
            teams=sorted(set(filters.teams)),
            unassigned_team=filters.unassigned_team,
            owners=sorted(set(filters.owners)),
            unowned=filters.unowned,
            patients=filters.patients,
            due_before=filters.due_before,
            due_after=filters.due_after,
            overdue=filters.overdue,
            due_soon=filters.due_soon,
            now=now,
            soon_until=now + due_soon,
        ),
        *filters.extra,
    ]


def task_filter_conditions(
    *,
    statuses: Sequence[str],
    roles: Sequence[Any],
    types: Sequence[Any],
    teams: Sequence[Any],
    unassigned_team: bool,
    owners: Sequence[Any],
    unowned: bool,
    patients: Sequence[Any],
    due_before: Any,
    due_after: Any,
    overdue: bool | None,
    due_soon: bool | None,
    now: Any,
    soon_until: Any,
) -> list[ColumnElement[bool]]:
    """The conditions of TaskFilters; list items and times are values or bind parameters (a statement
    built once per shape, `page_statements`), the rest is the shape."""
    conditions: list[ColumnElement[bool]] = [status_in(statuses) if statuses else false()]
    if roles:
        conditions.append(Task.role.in_(roles))
    if types:
        conditions.append(Task.type.in_(types))
    if teams or unassigned_team:
        options = [Task.team.in_(teams)] if teams else []
        conditions.append(or_(*options, Task.team.is_(None)) if unassigned_team else options[0])
    if owners or unowned:
        options = [Task.owner.in_(owners)] if owners else []
        conditions.append(or_(*options, Task.owner.is_(None)) if unowned else options[0])
    if patients:
        conditions.append(Task.patient_id.in_(patients))
    if due_before is not None:
        conditions.append(Task.due_at < due_before)
    if due_after is not None:
        conditions.append(Task.due_at >= due_after)
    if overdue is not None:
        conditions.append(Task.due_at <= now if overdue else Task.due_at > now)
    if due_soon is not None:
        window = and_(Task.due_at > now, Task.due_at <= soon_until)
        conditions.append(window if due_soon else ~window)
    return conditions


def sort_columns(sort: SortKey) -> list[Any]:
    match sort:
        case SortKey.DUE:
            return [Task.due_at, Task.id]
        case SortKey.PRIORITY:
            return [PRIORITY_RANK, Task.due_at, Task.id]
        case SortKey.CREATED:
            return [Task.created_at, Task.id]
        case SortKey.UPDATED:
            return [Task.updated_at, Task.id]
    raise AssertionError(sort)  # pragma: no cover


# What a worklist row shows (app/api/tasks.task_item) and its cursor reads: not the whole row. The
# routing explanation (a JSON column) and the 512-character dedupe key cost decoding on every row.
WORKLIST_TASK_COLUMNS = tuple(
    Task.__table__.c[name]
    for name in (
        "id", "type", "status", "priority", "role", "team", "owner", "patient_id", "encounter_id", "due_at",
        "due_basis", "escalated_at", "failed_attempts", "business_status", "rule_id", "rule_version",
        "triggering_event_ids", "created_at", "updated_at", "version",
    )
)  # fmt: skip

PATIENT_COLUMNS = (
    Patient.given_name.label("patient_given_name"),
    Patient.family_name.label("patient_family_name"),
    Patient.birth_date.label("patient_birth_date"),
)


@dataclass(frozen=True, slots=True)
class PatientView:
    """The patient columns a worklist row shows (read with the task, PATIENT_COLUMNS)."""

    id: uuid.UUID
    given_name: str | None
    family_name: str | None
    birth_date: date | None

    @classmethod
    def of(cls, row: Row[Any]) -> PatientView | None:
        if row.patient_id is None:
            return None
        return cls(row.patient_id, row.patient_given_name, row.patient_family_name, row.patient_birth_date)


@dataclass(frozen=True, slots=True)
class TaskPage:
    rows: list[tuple[Row[Any], PatientView | None]]  # tasks as table rows (column attributes)
    next_cursor: Cursor | None
    total: int
    total_exact: bool


def page_statement(
    conditions: Sequence[ColumnElement[bool]],
    branches: Sequence[ColumnElement[bool]],
    *,
    sort: SortKey,
    order: Order,
    after: Sequence[Any] | None,
    limit: Any,
    with_patient: bool,
    task_columns: Sequence[Any] | None = None,
) -> Select[Any]:
    """The page (`limit` rows after the sort key `after`); values are literals or bind parameters.
    `task_columns`: the tasks columns to read (None: all)."""
    columns = sort_columns(sort)
    page_conditions = list(conditions)
    if after is not None:
        bound = tuple_(
            *[
                v if isinstance(v, BindParameter) else literal(v, c.expression.type)
                for v, c in zip(after, columns, strict=True)
            ]
        )
        key = tuple_(*columns)
        page_conditions.append(key > bound if order is Order.ASC else key < bound)
    # Core rows, not ORM objects, and the patient's display columns in the same statement: a page is
    # read-only, and entity loading plus a second query cost more than the query (bench/api.py).
    query: Select[Any] = select(*(task_columns or Task.__table__.c)).select_from(Task)
    if with_patient:
        query = query.add_columns(*PATIENT_COLUMNS).outerjoin(Patient, Patient.id == Task.patient_id)
    if branches:
        first = ordered_union(Task.id, columns, order is Order.DESC, page_conditions, branches, limit)
        merged_order = [c.asc() if order is Order.ASC else c.desc() for c in first.c if c.name != "key"]
        return query.join(first, first.c.key == Task.id).order_by(*merged_order)
    ordering = [c.asc() if order is Order.ASC else c.desc() for c in columns]
    return query.where(*page_conditions).order_by(*ordering).limit(limit)


def count_statement(
    conditions: Sequence[ColumnElement[bool]], branches: Sequence[ColumnElement[bool]], limit: Any
) -> Select[Any]:
    """count(*) of the matches, reading at most `limit` rows over all branches (None: all)."""
    if branches:
        return union_count(Task.id, conditions, branches, limit)
    inner = select(Task.id).where(*conditions)
    if limit is not None:
        inner = inner.limit(limit)
    return select(func.count()).select_from(inner.subquery())


def page_of(
    rows: Sequence[Any], counted: int, *, sort: SortKey, order: Order, limit: int, cap: int | None, with_patient: bool
) -> TaskPage:
    """A TaskPage from the page's rows (limit + 1 read: the extra one says there is a next page)."""
    page = [(t, PatientView.of(t) if with_patient else None) for t in rows[:limit]]
    next_cursor = None
    if len(rows) > limit and page:
        last = page[-1][0]
        next_cursor = Cursor(
            sort,
            order,
            sort_key_of(
                sort,
                task_id=last.id,
                priority=last.priority,
                due_at=last.due_at,
                created_at=last.created_at,
                updated_at=last.updated_at,
            ),
        )
    return TaskPage(page, next_cursor, *_capped(counted, cap))


def _capped(counted: int, cap: int | None) -> tuple[int, bool]:
    return (cap, False) if cap is not None and counted > cap else (counted, True)


async def task_page(
    session: AsyncSession,
    conditions: Sequence[ColumnElement[bool]],
    *,
    sort: SortKey,
    order: Order,
    limit: int,
    cursor: Cursor | None,
    count_cap: int | None,
    with_patient: bool = True,
) -> TaskPage:
    """One page in (sort, order) after `cursor`, and the total matching `conditions` counted up to
    `count_cap` rows (None: exact). Limit 0 returns the total only. The generic path (FHIR Task search);
    a worklist reads its scope one index range at a time (app/api/worklist_query.py)."""
    rows: Sequence[Any] = []
    if limit > 0:
        after = None if cursor is None else cursor.key
        query = page_statement(
            conditions, (), sort=sort, order=order, after=after, limit=limit + 1, with_patient=with_patient
        )
        rows = (await session.execute(query)).all()
    # With a cap, counting stops after cap+1 rows: a busy queue's "500+" costs a 500-row index scan.
    count = count_statement(conditions, (), None if count_cap is None else count_cap + 1)
    counted = int(await session.scalar(count) or 0)
    return page_of(rows, counted, sort=sort, order=order, limit=limit, cap=count_cap, with_patient=with_patient)


@dataclass(frozen=True, slots=True)
class QueueCounts:
    role: str
    team: str | None
    open: int
    due_today: int
    overdue: int
    unassigned: int  # open tasks nobody has claimed (no owner)


async def queue_summary(
    session: AsyncSession,
    conditions: Sequence[ColumnElement[bool]],
    *,
    now: datetime,
    day_start: datetime,
    day_end: datetime,
) -> list[QueueCounts]:
    """Open tasks per (role, team): all, due today on the facility clock [day_start, day_end), overdue,
    unassigned (no owner)."""
    due_today = func.sum(case((and_(Task.due_at >= day_start, Task.due_at < day_end), 1), else_=0))
    overdue = func.sum(case((Task.due_at <= now, 1), else_=0))
    unowned = func.sum(case((Task.owner.is_(None), 1), else_=0))
    query = (
        select(Task.role, Task.team, func.count(), due_today, overdue, unowned)
        .where(status_in(ACTIVE_STATUSES), *conditions)
        .group_by(Task.role, Task.team)
        .order_by(Task.role, Task.team)
    )
    return [
        QueueCounts(role, team, int(n), int(today or 0), int(late or 0), int(free or 0))
        for role, team, n, today, late, free in (await session.execute(query)).all()
    ]
