"""`/ui/worklist` (a role/team queue with filters and paging) and `/ui/tasks/{id}` (one task, why it
exists, and its actions). Reads and actions go through the API's own functions (app/api/tasks.py,
app/api/task_actions.py), so scope, Part 2, If-Match and audit are the API's."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import ValidationError

from app.api.access import is_supervisor
from app.api.audit import request_line
from app.api.problems import Problem
from app.api.schemas import AssignIn, AttemptIn, CancelIn, CompleteIn, TaskOut
from app.api.task_actions import action_request, run_action
from app.api.tasks import (
    UNASSIGNED,
    explain_task,
    log_attempt,
    page_request,
    queue_roles,
    visible_task_out,
    worklist_filters,
    worklist_page,
)
from app.tasks.actions import Action, etag
from app.tasks.lifecycle import ACTIVE, STATUSES, AttemptOutcome
from app.tasks.worklist import Order, SortKey
from app.ui.rendering import UiRoute, redirect, render, safe_next
from app.ui.session import UI_PATH, UiFormPrincipal, UiPrincipal, may, require_scope

router = APIRouter(prefix=UI_PATH, route_class=UiRoute, include_in_schema=False)
OWNER_CHOICES = (("", "anyone"), ("me", "me"), (UNASSIGNED, "nobody (unclaimed)"))
ALL_STATUSES = "all"
STALE_MESSAGE = (
    "Someone changed this task after you opened it ({detail}). The page now shows it as it stands: "
    "check it and try again."
)
DONE_MESSAGES = {
    Action.CLAIM: "Task claimed.",
    Action.RELEASE: "Task released to the queue.",
    Action.START: "Work started.",
    Action.COMPLETE: "Task completed.",
    Action.CANCEL: "Task cancelled.",
    Action.ASSIGN: "Task assigned.",
}


def _blank(value: str | None) -> str | None:
    return value.strip() if value and value.strip() else None


@router.get("/worklist", summary="My worklist")
async def worklist(
    request: Request,
    principal: UiPrincipal,
    role: Annotated[str | None, Query(max_length=64)] = None,
    type_: Annotated[str | None, Query(alias="type", max_length=64)] = None,
    status: Annotated[str | None, Query(max_length=32)] = None,
    team: Annotated[str | None, Query(max_length=255)] = None,
    owner: Annotated[str | None, Query(max_length=255)] = None,
    patient: Annotated[uuid.UUID | None, Query()] = None,
    overdue: Annotated[bool, Query()] = False,
    due_soon: Annotated[bool, Query()] = False,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    require_scope(request, principal, "Task", "s")
    role, type_, status, team, owner = map(_blank, (role, type_, status, team, owner))
    roles = queue_roles(request, principal, [role] if role else None)
    filters = worklist_filters(
        principal,
        status=list(STATUSES) if status == ALL_STATUSES else [status] if status else None,
        type_=[type_] if type_ else None,
        team=[team] if team else None,
        owner=[owner] if owner else None,
        patient=[patient] if patient else None,
        due_before=None,
        due_after=None,
        overdue=True if overdue else None,
        due_soon=True if due_soon else None,
    )
    filters.roles = roles
    page = page_request(request, SortKey.DUE, Order.ASC, None, cursor)
    found = await worklist_page(request, principal, filters, page, request_line(request))
    settings = request.app.state.settings
    supervisor = is_supervisor(principal, settings)
    role_choices = sorted({*principal.roles, *(settings.care_plan_writer_roles if supervisor else ())})
    params = {
        "role": role or "",
        "type": type_ or "",
        "status": status or "",
        "team": team or "",
        "owner": owner or "",
        "overdue": overdue,
        "due_soon": due_soon,
        "patient": str(patient) if patient else "",
    }
    return render(
        request,
        "worklist.html",
        {
            "page": found,
            "params": params,
            "role_choices": role_choices,
            "type_choices": _task_types(request),
            "team_choices": sorted(principal.teams),
            "owner_choices": OWNER_CHOICES,
            "status_choices": sorted(STATUSES),
            "all_statuses": ALL_STATUSES,
            "unassigned": UNASSIGNED,
            "next_query": _query_with(params, cursor=found.next_cursor) if found.next_cursor else None,
            "first_query": _query_with(params, cursor=None) if cursor else None,
            "attempt_outcomes": [o.value for o in AttemptOutcome],
            "active": ACTIVE,
            "may_act": may(request, principal, "Task", "u"),
        },
    )


def _task_types(request: Request) -> list[str]:
    """The task types the loaded rules raise: the filter's suggestions."""
    rules = request.app.state.runtime.rule_engine.rules
    return sorted({r.task.type for r in (*rules.rule, *rules.member_rule)})


def _query_with(params: dict[str, object], cursor: str | None) -> dict[str, str]:
    shown = {k: ("true" if v is True else str(v)) for k, v in params.items() if v not in ("", False, None)}
    if cursor:
        shown["cursor"] = cursor
    return shown


@router.get("/tasks/{task_id}", summary="One task and why it exists")
async def task_detail(request: Request, principal: UiPrincipal, task_id: uuid.UUID) -> Response:
    require_scope(request, principal, "Task", "r")
    task = await visible_task_out(request, principal, task_id, request_line(request))
    if task is None:
        raise Problem(404, "Not Found", "no such task", field="task_id")
    explanation = await explain_task(request, principal, task_id)
    return render(
        request,
        "task.html",
        {
            "task": task,
            "explanation": explanation,
            "attempt_outcomes": [o.value for o in AttemptOutcome],
            "active": ACTIVE,
            "may_act": may(request, principal, "Task", "u"),
        },
    )


def _back(task_id: uuid.UUID, form_next: object) -> str:
    return safe_next(form_next, f"{UI_PATH}/tasks/{task_id}")


def _invalid(exc: ValidationError) -> str:
    first = exc.errors()[0]
    return f"{'.'.join(str(p) for p in first.get('loc', ()))}: {first.get('msg', 'not valid')}"


async def _act(request: Request, principal: UiFormPrincipal, task_id: uuid.UUID, action: Action) -> Response:
    """One task action through app/api/task_actions.run_action (the API's transaction and audit)."""
    require_scope(request, principal, "Task", "u")
    form = await request.form()
    back = _back(task_id, form.get("next"))
    version = form.get("version")
    note: str | None = None
    extra: dict[str, str] = {}
    try:
        if action is Action.COMPLETE:
            body = CompleteIn(outcome=str(form.get("outcome", "")), note=_blank(str(form.get("note") or "")))
            extra, note = {"outcome": body.outcome}, body.note
        elif action is Action.CANCEL:
            extra = {"reason": CancelIn(reason=str(form.get("reason", ""))).reason}
        elif action is Action.ASSIGN:
            extra = {"owner": AssignIn(owner=str(form.get("owner", ""))).owner}
    except ValidationError as exc:
        return redirect(request, back, f"Not done: {_invalid(exc)}", "error")
    if_match = etag(int(version)) if isinstance(version, str) and version.isdigit() else None
    out, refused = await run_action(
        request, principal, task_id, action_request(request, principal, action, if_match, **extra), note=note
    )
    if refused is not None:
        message = STALE_MESSAGE.format(detail=refused.message) if refused.status == 412 else refused.message
        return redirect(request, back, f"Not done: {message}", "error")
    if out is None:
        raise Problem(404, "Not Found", "no such task", field="task_id")
    return redirect(request, back, DONE_MESSAGES[action])


@router.post("/tasks/{task_id}/claim", summary="Claim a task")
async def claim(request: Request, principal: UiFormPrincipal, task_id: uuid.UUID) -> Response:
    return await _act(request, principal, task_id, Action.CLAIM)


@router.post("/tasks/{task_id}/release", summary="Release a task")
async def release(request: Request, principal: UiFormPrincipal, task_id: uuid.UUID) -> Response:
    return await _act(request, principal, task_id, Action.RELEASE)


@router.post("/tasks/{task_id}/complete", summary="Complete a task with an outcome")
async def complete(request: Request, principal: UiFormPrincipal, task_id: uuid.UUID) -> Response:
    return await _act(request, principal, task_id, Action.COMPLETE)


@router.post("/tasks/{task_id}/cancel", summary="Cancel a task with a reason")
async def cancel(request: Request, principal: UiFormPrincipal, task_id: uuid.UUID) -> Response:
    return await _act(request, principal, task_id, Action.CANCEL)


@router.post("/tasks/{task_id}/assign", summary="Supervisors: assign (reassign) a task")
async def assign(request: Request, principal: UiFormPrincipal, task_id: uuid.UUID) -> Response:
    return await _act(request, principal, task_id, Action.ASSIGN)


@router.post("/tasks/{task_id}/attempts", summary="Log an outreach attempt")
async def attempt(request: Request, principal: UiFormPrincipal, task_id: uuid.UUID) -> Response:
    """Through the API's own attempt endpoint function (app/api/tasks.log_attempt)."""
    require_scope(request, principal, "Task", "u")
    form = await request.form()
    back = _back(task_id, form.get("next"))
    version = form.get("version")
    try:
        body = AttemptIn.model_validate({"outcome": form.get("outcome"), "note": _blank(str(form.get("note") or ""))})
    except ValidationError as exc:
        return redirect(request, back, f"Not logged: {_invalid(exc)}", "error")
    if_match = etag(int(version)) if isinstance(version, str) and version.isdigit() else None
    try:
        out: TaskOut = await log_attempt(request, Response(), principal, task_id, body, if_match)
    except Problem as exc:
        if exc.status == 404:
            raise
        message = STALE_MESSAGE.format(detail=exc.detail) if exc.status == 412 else exc.detail
        return redirect(request, back, f"Not logged: {message}", "error")
    return redirect(request, back, f"Attempt logged ({body.outcome.value}); the task is {out.status}.")
