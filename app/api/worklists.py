"""Role queues: `GET /worklists/{role}` (one role's open tasks) and `GET /worklists/summary`.

A facilitator reads the queues of their own roles; a supervisor any role's. Both are limited to the
caller's teams plus the unattributed pool (app/api/access.py) and audited.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request, Response

from app.api.access import is_supervisor, task_conditions
from app.api.auth import CurrentPrincipal
from app.api.problems import Problem
from app.api.schemas import QueueSummary, QueueSummaryRow, WorklistPage
from app.api.scopes import scoped
from app.api.tasks import page_request, worklist_filters, worklist_page
from app.db.models import utcnow
from app.state.audit import AuditAction, record_audit
from app.state.worklists import queue_summary
from app.tasks.worklist import Order, SortKey

router = APIRouter(tags=["worklists"], dependencies=scoped("Task"))  # SMART scope: docs/security.md


def local_day(now: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """Today on the facility clock as [start, end) instants (a DST day is 23 or 25 hours)."""
    today = now.astimezone(zone).date()
    start = datetime(today.year, today.month, today.day, tzinfo=zone)
    following = today + timedelta(days=1)
    return start, datetime(following.year, following.month, following.day, tzinfo=zone)


@router.get("/worklists/summary", response_model=QueueSummary)
async def summary(request: Request, principal: CurrentPrincipal) -> QueueSummary:
    """Per role and team in the caller's scope: open tasks, due today, overdue, unassigned (no owner)."""
    settings = request.app.state.settings
    zone = ZoneInfo(settings.facility_timezone)
    now = utcnow()
    start, end = local_day(now, zone)
    async with request.app.state.runtime.sessions() as session, session.begin():
        rows = await queue_summary(session, task_conditions(principal, settings), now=now, day_start=start, day_end=end)
        record_audit(
            session,
            principal.subject,
            principal.roles,
            action=AuditAction.READ,
            resource_type="Task",
            request="GET /worklists/summary",
        )
    return QueueSummary(
        as_of=now,
        timezone=settings.facility_timezone,
        queues=[
            QueueSummaryRow(
                role=r.role, team=r.team, open=r.open, due_today=r.due_today, overdue=r.overdue, unassigned=r.unassigned
            )
            for r in rows
        ],
    )


@router.get("/worklists/{role}", response_model=WorklistPage)
async def role_queue(
    request: Request,
    principal: CurrentPrincipal,
    role: str,
    type_: Annotated[list[str] | None, Query(alias="type", description="task type(s)")] = None,
    team: Annotated[list[str] | None, Query(description="team(s); `none` = the unattributed pool")] = None,
    owner: Annotated[list[str] | None, Query(description="owner(s); `me`; `none` = unclaimed")] = None,
    patient: Annotated[list[uuid.UUID] | None, Query(description="patient id(s)")] = None,
    due_before: Annotated[datetime | None, Query(description="due strictly before")] = None,
    due_after: Annotated[datetime | None, Query(description="due at or after")] = None,
    overdue: Annotated[bool | None, Query()] = None,
    due_soon: Annotated[bool | None, Query()] = None,
    sort: Annotated[SortKey, Query()] = SortKey.DUE,
    order: Annotated[Order, Query()] = Order.ASC,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int | None, Query(ge=0)] = None,
) -> Response:
    """The role's open tasks, soonest due first, with the same filters and paging as `GET /tasks`."""
    if "\x00" in role:
        raise Problem(422, "Request is not valid", "values may not contain NUL characters", field="role")
    if role not in principal.roles and not is_supervisor(principal, request.app.state.settings):
        raise Problem(403, "Forbidden", "you may only read the queues of your own roles", field="role")
    filters = worklist_filters(
        principal,
        status=None,
        type_=type_,
        team=team,
        owner=owner,
        patient=patient,
        due_before=due_before,
        due_after=due_after,
        overdue=overdue,
        due_soon=due_soon,
    )
    filters.roles = [role]
    page = page_request(request, sort, order, limit, cursor)
    what = f"GET /worklists/{role[:32]}?{request.url.query}"
    return (await worklist_page(request, principal, filters, page, what)).response()
