"""Task actions: `POST /tasks/{id}/claim | release | assign | start | complete | cancel`.

Each answers the task as it now stands with `ETag: W/"<version>"`. A request with `If-Match` naming
another version is refused 412 (the caller acted on a stale copy); claiming a task someone else owns
is 409; a move the FHIR Task state machine forbids is 409. Every attempt is audited; every change
writes a task_history row. Rules: app/tasks/actions.py; locking: app/state/task_actions.py.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from app.api.access import is_supervisor, task_conditions
from app.api.audit import AuditAction, AuditOutcome, audit
from app.api.auth import CurrentPrincipal, Principal
from app.api.problems import Problem
from app.api.schemas import AssignIn, CancelIn, CompleteIn, TaskOut
from app.api.scopes import scoped
from app.api.tasks import _due_soon, _task_out
from app.db.models import Patient, utcnow
from app.state.task_actions import apply_to_locked, load_for_update
from app.tasks.actions import Action, ActionRefused, etag, parse_etag
from app.tasks.actions import Request as ActionRequest

router = APIRouter(tags=["tasks"], dependencies=scoped("Task"))  # SMART scope: docs/security.md (u)

IfMatch = Annotated[str | None, Header(alias="If-Match", description='W/"<version>" from the ETag you hold')]


def if_match_version(value: str | None) -> int | None:
    try:
        return parse_etag(value)
    except ValueError as exc:
        raise Problem(412, "Precondition Failed", str(exc), field="If-Match") from None


async def run_action(
    request: Request,
    principal: Principal,
    task_id: uuid.UUID,
    action: ActionRequest,
    *,
    note: str | None = None,
) -> tuple[TaskOut | None, ActionRefused | None]:
    """Apply in one transaction and audit the attempt; (task out, refusal). Refusals are raised by the
    caller after the commit, so the refused attempt stays audited, with the task's patient even when the
    task is outside the caller's scope (as reads and FHIR updates are)."""
    settings = request.app.state.settings
    out: TaskOut | None = None
    refused: ActionRefused | None = None
    async with request.app.state.runtime.sessions() as session, session.begin():
        task, visible = await load_for_update(session, task_id, task_conditions(principal, settings))
        if task is not None and visible:
            refused = await apply_to_locked(session, task, [action], note=note)
            if refused is None:
                patient = await session.get(Patient, task.patient_id) if task.patient_id else None
                out = _task_out(task, patient, utcnow(), _due_soon(request))
        audit(
            session,
            request,
            principal,
            action=AuditAction.UPDATE,
            resource_type="Task",
            patient_ids=[task.patient_id] if task is not None else [],
            outcome=AuditOutcome.SUCCESS if out is not None else AuditOutcome.MINOR_FAILURE,
        )
    return out, refused


async def respond(
    request: Request,
    principal: Principal,
    task_id: uuid.UUID,
    action: ActionRequest,
    *,
    note: str | None = None,
) -> JSONResponse:
    out, refused = await run_action(request, principal, task_id, action, note=note)
    if refused is not None:
        raise Problem(refused.status, _TITLES.get(refused.status, "Conflict"), refused.message, field=refused.field)
    if out is None:
        raise Problem(404, "Not Found", "no such task", field="task_id")
    return JSONResponse(out.model_dump(mode="json"), headers={"ETag": etag(out.version)})


_TITLES = {403: "Forbidden", 409: "Conflict", 412: "Precondition Failed", 422: "Request is not valid"}


def action_request(
    request: Request, principal: Principal, action: Action, if_match: str | None, **extra: str
) -> ActionRequest:
    return ActionRequest(
        action=action,
        actor=principal.subject,
        supervisor=is_supervisor(principal, request.app.state.settings),
        if_match=if_match_version(if_match),
        **extra,  # type: ignore[arg-type]
    )


_RESPONSES = {
    404: {"description": "no such task in your scope"},
    409: {"description": "owned by someone else, or a move the task's status does not allow"},
    412: {"description": "If-Match names a version other than the task's"},
}


@router.post("/tasks/{task_id}/claim", response_model=TaskOut, responses=_RESPONSES)
async def claim(
    request: Request, principal: CurrentPrincipal, task_id: uuid.UUID, if_match: IfMatch = None
) -> JSONResponse:
    """Take an unclaimed task (claiming your own again changes nothing)."""
    return await respond(request, principal, task_id, action_request(request, principal, Action.CLAIM, if_match))


@router.post("/tasks/{task_id}/release", response_model=TaskOut, responses=_RESPONSES)
async def release(
    request: Request, principal: CurrentPrincipal, task_id: uuid.UUID, if_match: IfMatch = None
) -> JSONResponse:
    """Give a task back to the queue (the owner, or a supervisor)."""
    return await respond(request, principal, task_id, action_request(request, principal, Action.RELEASE, if_match))


@router.post("/tasks/{task_id}/assign", response_model=TaskOut, responses=_RESPONSES)
async def assign(
    request: Request, principal: CurrentPrincipal, task_id: uuid.UUID, body: AssignIn, if_match: IfMatch = None
) -> JSONResponse:
    """Supervisors: give the task to `owner`, replacing any owner."""
    return await respond(
        request, principal, task_id, action_request(request, principal, Action.ASSIGN, if_match, owner=body.owner)
    )


@router.post("/tasks/{task_id}/start", response_model=TaskOut, responses=_RESPONSES)
async def start(
    request: Request, principal: CurrentPrincipal, task_id: uuid.UUID, if_match: IfMatch = None
) -> JSONResponse:
    """Begin work (status in-progress); an unclaimed task becomes the caller's."""
    return await respond(request, principal, task_id, action_request(request, principal, Action.START, if_match))


@router.post("/tasks/{task_id}/complete", response_model=TaskOut, responses=_RESPONSES)
async def complete(
    request: Request, principal: CurrentPrincipal, task_id: uuid.UUID, body: CompleteIn, if_match: IfMatch = None
) -> JSONResponse:
    """Finish with an outcome (kept as the task's business status and in its history)."""
    action = action_request(request, principal, Action.COMPLETE, if_match, outcome=body.outcome)
    return await respond(request, principal, task_id, action, note=body.note)


@router.post("/tasks/{task_id}/cancel", response_model=TaskOut, responses=_RESPONSES)
async def cancel(
    request: Request, principal: CurrentPrincipal, task_id: uuid.UUID, body: CancelIn, if_match: IfMatch = None
) -> JSONResponse:
    """Cancel with a reason. The task keeps its dedupe key, so the rule that raised it does not raise it
    again for the same event."""
    action = action_request(request, principal, Action.CANCEL, if_match, reason=body.reason)
    return await respond(request, principal, task_id, action)
