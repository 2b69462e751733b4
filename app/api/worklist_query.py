"""A worklist page (`GET /tasks`, `GET /worklists/{role}`) through statements built once per shape.

Why: the worklist is the API's hottest read, and building its SQLAlchemy statement (one index range per
(role, team) of the caller's scope, app/db/ordered_union.py) cost more Python time than PostgreSQL spent
running it. Here a request is reduced to its shape (which filters, how many values of each, which
ranges, which sort) and its values; the statements of a shape are built once from the same conditions
as every other task query (app/state/worklists.py, app/api/access.py) and run with the values bound
(app/db/prepared.py). bench/api.py measures it; tests/integration/test_worklist_query.py proves it
returns what the generic path returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy.ext.asyncio import AsyncConnection

from app.api.access import is_supervisor, range_condition, scope_conditions, scope_ranges, task_part2_condition
from app.api.auth import Principal, may_see_part2
from app.db.models import Task
from app.db.prepared import Prepared
from app.settings import Settings
from app.state.worklists import (
    WORKLIST_TASK_COLUMNS,
    TaskFilters,
    TaskPage,
    count_statement,
    page_of,
    page_statement,
    sort_columns,
    task_filter_conditions,
)
from app.tasks.worklist import Cursor, Order, SortKey


@dataclass(frozen=True, slots=True)
class PageShape:
    """What a worklist page's statements depend on apart from values: their cache key. The builder
    (`page_statements`) reads nothing else, so no request's values can end up in a cached statement."""

    statuses: tuple[str, ...]  # inlined: the partial indexes apply
    ranges: tuple[bool, ...]  # the caller's (role, team) ranges (access.scope_ranges); True: the pool
    scope_roles: int | None  # without ranges: the caller's roles (None: every role, a supervisor's)
    scope_teams: int
    part2_permitted: bool  # Part 2 rows shown when consented (else never)
    roles: int
    types: int
    teams: int
    unassigned_team: bool
    owners: int
    unowned: bool
    patients: int
    due_before: bool
    due_after: bool
    overdue: bool | None
    due_soon: bool | None
    sort: SortKey
    order: Order
    after: bool  # a cursor


@dataclass(frozen=True, slots=True)
class PageQuery:
    """A worklist request: its filters, the caller's scope and the page wanted."""

    filters: TaskFilters
    ranges: Sequence[tuple[str, str | None]]  # access.scope_ranges; empty: scope_roles/scope_teams apply
    scope_roles: Sequence[str] | None
    scope_teams: Sequence[str]
    part2_permitted: bool
    sort: SortKey
    order: Order
    cursor: Cursor | None
    limit: int
    count_cap: int

    @classmethod
    def of(
        cls,
        principal: Principal,
        settings: Settings,
        filters: TaskFilters,
        sort: SortKey,
        order: Order,
        cursor: Cursor | None,
        limit: int,
    ) -> PageQuery:
        """The request of `principal`, scoped as app/api/access.py scopes every task query."""
        if filters.extra:
            raise ValueError("a worklist shape has no place for extra conditions: use state.worklists.task_page")
        return cls(
            filters=filters,
            ranges=scope_ranges(
                principal, settings, roles=filters.roles, teams=filters.teams, unassigned_team=filters.unassigned_team
            ),
            scope_roles=None if is_supervisor(principal, settings) else sorted(principal.roles),
            scope_teams=sorted(principal.teams),
            part2_permitted=may_see_part2(principal, settings),
            sort=sort,
            order=order,
            cursor=cursor,
            limit=limit,
            count_cap=settings.worklist_count_cap,
        )


INSTANT = Task.__table__.c.due_at.type  # the UTCDateTime of every time compared


def _named(prefix: str, n: int, column: str) -> list[Any]:
    """`n` bind parameters `prefix_0`, ... typed as the tasks column they are compared with."""
    return [bindparam(f"{prefix}_{i}", type_=Task.__table__.c[column].type) for i in range(n)]


def page_shape(query: PageQuery, now: datetime, due_soon: timedelta) -> tuple[PageShape, dict[str, Any]]:
    """The shape of `query` and the values of its bind parameters (named as `page_statements` names them)."""
    f, ranged = query.filters, bool(query.ranges)
    lists: dict[str, Sequence[Any]] = {
        "range_role": [role for role, _ in query.ranges],
        "range_team": [team for _, team in query.ranges if team is not None],
        "scope_role": [] if ranged or query.scope_roles is None else sorted(query.scope_roles),
        "scope_team": [] if ranged else sorted(query.scope_teams),
        "role": [] if ranged else sorted(set(f.roles)),
        "type": sorted(set(f.types)),
        "team": [] if ranged else sorted(set(f.teams)),
        "owner": sorted(set(f.owners)),
        "patient": list(f.patients),
        "after": list(query.cursor.key) if query.cursor else [],
    }
    values: dict[str, Any] = {f"{name}_{i}": v for name, items in lists.items() for i, v in enumerate(items)}
    values.update(page_limit=query.limit + 1, count_limit=query.count_cap + 1, due_before=f.due_before)
    values.update(due_after=f.due_after, now=now, soon_until=now + due_soon)
    shape = PageShape(
        statuses=tuple(sorted(set(f.statuses))),
        ranges=tuple(team is None for _, team in query.ranges),
        scope_roles=None if not ranged and query.scope_roles is None else len(lists["scope_role"]),
        scope_teams=len(lists["scope_team"]),
        part2_permitted=query.part2_permitted,
        roles=len(lists["role"]),
        types=len(lists["type"]),
        teams=len(lists["team"]),
        unassigned_team=f.unassigned_team and not ranged,
        owners=len(lists["owner"]),
        unowned=f.unowned,
        patients=len(lists["patient"]),
        due_before=f.due_before is not None,
        due_after=f.due_after is not None,
        overdue=f.overdue,
        due_soon=f.due_soon,
        sort=query.sort,
        order=query.order,
        after=query.cursor is not None,
    )
    return shape, values


@lru_cache(maxsize=512)
def page_statements(shape: PageShape) -> tuple[Prepared, Prepared]:
    """(page with its capped count, capped count) of a worklist shape; every value is a bind parameter
    (`page_shape` names them)."""
    conditions = task_filter_conditions(
        statuses=shape.statuses,
        roles=_named("role", shape.roles, "role"),
        types=_named("type", shape.types, "type"),
        teams=_named("team", shape.teams, "team"),
        unassigned_team=shape.unassigned_team,
        owners=_named("owner", shape.owners, "owner"),
        unowned=shape.unowned,
        patients=_named("patient", shape.patients, "patient_id"),
        due_before=bindparam("due_before", type_=INSTANT) if shape.due_before else None,
        due_after=bindparam("due_after", type_=INSTANT) if shape.due_after else None,
        overdue=shape.overdue,
        due_soon=shape.due_soon,
        now=bindparam("now", type_=INSTANT),
        soon_until=bindparam("soon_until", type_=INSTANT),
    )
    branches = []
    teams = iter(_named("range_team", shape.ranges.count(False), "team"))
    for i, pool in enumerate(shape.ranges):
        branches.append(
            range_condition(
                bindparam(f"range_role_{i}", type_=Task.__table__.c.role.type), None if pool else next(teams), pool
            )
        )
    if not branches:
        scope_roles = None if shape.scope_roles is None else _named("scope_role", shape.scope_roles, "role")
        conditions += scope_conditions(scope_roles, _named("scope_team", shape.scope_teams, "team"))
    conditions.append(task_part2_condition(shape.part2_permitted, bindparam("now", type_=INSTANT)))
    after = None
    if shape.after:
        after = [bindparam(f"after_{i}", type_=c.expression.type) for i, c in enumerate(sort_columns(shape.sort))]
    page = page_statement(
        conditions,
        branches,
        sort=shape.sort,
        order=shape.order,
        after=after,
        limit=bindparam("page_limit"),
        with_patient=True,
        task_columns=WORKLIST_TASK_COLUMNS,
    )
    count = count_statement(conditions, branches, bindparam("count_limit"))
    # The total rides on every page row (computed once: an uncorrelated subquery), one round trip for
    # both; an empty page asks the count alone.
    return Prepared(page.add_columns(count.scalar_subquery().label("counted"))), Prepared(count)


async def run_page(conn: AsyncConnection, query: PageQuery, now: datetime, due_soon: timedelta) -> TaskPage:
    """`task_page` for a worklist request, through statements built once per shape (app/db/prepared.py):
    the API's hottest read."""
    shape, values = page_shape(query, now, due_soon)
    page, count = page_statements(shape)
    rows = await page.rows(conn, values) if query.limit > 0 else []
    counted = rows[0].counted if rows else (await count.rows(conn, values))[0][0]
    return page_of(
        rows,
        int(counted or 0),
        sort=query.sort,
        order=query.order,
        limit=query.limit,
        cap=query.count_cap,
        with_patient=True,
    )
