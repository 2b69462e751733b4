"""`/ui/supervisor`: queue health per role and team (open, due today, overdue, unassigned) from the
API's summary, and the escalated tasks with a reassign form. Supervisors only, as the escalation
queue is; the counts come from the same function as `GET /worklists/summary`."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.api.access import is_supervisor
from app.api.problems import Problem
from app.api.tasks import UNASSIGNED, escalated_queue
from app.api.worklists import summary
from app.ui.rendering import UiRoute, render
from app.ui.session import UI_PATH, UiPrincipal, may, require_scope

router = APIRouter(prefix=UI_PATH, route_class=UiRoute, include_in_schema=False)
ESCALATED_SHOWN = 100


@router.get("/supervisor", summary="Queue health and reassignment")
async def queue_health(request: Request, principal: UiPrincipal) -> Response:
    if not is_supervisor(principal, request.app.state.settings):
        raise Problem(403, "Forbidden", "queue health is for supervisors", field="role")
    require_scope(request, principal, "Task", "s")
    queues = await summary(request, principal)
    escalated = await escalated_queue(request, principal, ESCALATED_SHOWN)
    totals = {
        name: sum(getattr(q, name) for q in queues.queues) for name in ("open", "due_today", "overdue", "unassigned")
    }
    return render(
        request,
        "supervisor.html",
        {
            "summary": queues,
            "totals": totals,
            "escalated": escalated.items,
            "unassigned": UNASSIGNED,
            "may_act": may(request, principal, "Task", "u"),
        },
    )
