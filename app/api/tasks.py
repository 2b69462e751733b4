"""Task worklist: `GET /tasks`, scoped to the caller's roles unless the caller supervises."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.access import task_conditions
from app.api.auth import CurrentPrincipal, Principal
from app.api.problems import Problem
from app.api.schemas import (
    AttemptIn,
    HistoryEntry,
    PatientSummary,
    RuleRef,
    TaskExplanation,
    TaskList,
    TaskOut,
    TriggeringEvent,
)
from app.api.scopes import scoped
from app.db.models import InboundEvent, Patient, Task, TaskHistory, utcnow
from app.rules.config import RuleSpec
from app.rules.engine import RuleEngine
from app.state.audit import AuditAction, AuditOutcome, record_audit
from app.state.tasks import ACTIVE_STATUSES, record_attempt
from app.tasks.lifecycle import ACTIVE, STATUSES, TransitionError, timeliness

router = APIRouter(tags=["tasks"], dependencies=scoped("Task"))  # SMART scope: docs/security.md


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for raw in values or [] for v in raw.split(",") if v.strip()]


def _display_name(patient: Patient) -> str | None:
    parts = [p for p in (patient.given_name, patient.family_name) if p]
    return " ".join(parts) or None


def _task_out(task: Task, patient: Patient | None, now: datetime, due_soon: timedelta) -> TaskOut:
    return TaskOut(
        id=task.id,
        type=task.type,
        status=task.status,
        priority=task.priority,
        role=task.role,
        team=task.team,
        owner=task.owner,
        patient=None
        if patient is None
        else PatientSummary(id=patient.id, name=_display_name(patient), birth_date=patient.birth_date),
        encounter_id=task.encounter_id,
        due_at=task.due_at,
        due_basis=task.due_basis,
        timeliness=timeliness(task.due_at, now, due_soon) if task.status in ACTIVE else None,
        escalated_at=task.escalated_at,
        failed_attempts=task.failed_attempts,
        rule=RuleRef(id=task.rule_id, version=task.rule_version),
        triggering_event_ids=task.triggering_event_ids,
        created_at=task.created_at,
        updated_at=task.updated_at,
        version=task.version,
    )


async def _task_list(
    request: Request, principal: Principal, conditions: tuple[Any, ...], limit: int, what: str
) -> TaskList:
    """Tasks matching `conditions` within the caller's scope (app/api/access.py), soonest due first; audited."""
    query = (
        select(Task, Patient)
        .outerjoin(Patient, Patient.id == Task.patient_id)  # operational tasks (a missing roster file) have none
        .where(*conditions, *task_conditions(principal, request.app.state.settings))
        .order_by(Task.due_at, Task.id)
        .limit(limit)
    )
    async with request.app.state.runtime.sessions() as session, session.begin():
        rows = (await session.execute(query)).all()
        now, due_soon = utcnow(), _due_soon(request)
        items = [_task_out(task, patient, now, due_soon) for task, patient in rows]
        record_audit(
            session,
            principal.subject,
            principal.roles,
            action=AuditAction.READ,
            resource_type="Task",
            request=what,
            patient_ids=[str(item.patient.id) for item in items if item.patient],
        )
    return TaskList(items=items, count=len(items))


@router.get("/tasks", response_model=TaskList)
async def list_tasks(
    request: Request,
    principal: CurrentPrincipal,
    role: Annotated[list[str] | None, Query(description="role queue(s); default: the caller's roles")] = None,
    status: Annotated[
        list[str] | None, Query(description="FHIR Task status(es), repeat or comma-separate; default: active")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> TaskList:
    settings = request.app.state.settings
    roles = _split(role) or sorted(principal.roles)
    is_supervisor = principal.has_any_role(settings.supervisor_roles)
    if not is_supervisor and not set(roles) <= principal.roles:
        raise Problem(403, "Forbidden", "you may only read the queues of your own roles", field="role")
    statuses = _split(status) or list(ACTIVE_STATUSES)
    unknown = sorted(set(statuses) - STATUSES)
    if unknown:
        raise Problem(422, "Request is not valid", f"unknown task status: {', '.join(unknown)}", field="status")

    return await _task_list(
        request,
        principal,
        (Task.role.in_(roles), Task.status.in_(statuses)),
        limit,
        f"GET /tasks role={','.join(roles)}",
    )


@router.get("/tasks/{task_id}/explain", response_model=TaskExplanation)
async def explain_task(request: Request, principal: CurrentPrincipal, task_id: uuid.UUID) -> TaskExplanation:
    """The rule (id, version) and events that raised the task, how its due time and role were chosen,
    and its history: what a facilitator or auditor needs to see why it exists."""
    async with request.app.state.runtime.sessions() as session, session.begin():
        task = await _visible_task(session, request, principal, task_id, f"GET /tasks/{task_id}/explain")
        explanation = await _explain(session, task, _engine(request).rules_by_id) if task is not None else None
    if explanation is None:
        # Not yours, or Part 2 without the permission: the same answer as a task that does not exist
        # (raised after the commit, so the refused attempt stays audited).
        raise Problem(404, "Not Found", "no such task", field="task_id")
    return explanation


async def _explain(session: AsyncSession, task: Task, rules_by_id: Mapping[str, RuleSpec]) -> TaskExplanation:
    events = (
        await session.execute(select(InboundEvent).where(InboundEvent.id.in_(_uuids(task.triggering_event_ids))))
    ).scalars()
    by_id = {str(e.id): e for e in events}
    history = (
        await session.execute(select(TaskHistory).where(TaskHistory.task_id == task.id).order_by(TaskHistory.id))
    ).scalars()
    rule = rules_by_id.get(task.rule_id)
    supersedes = (
        (
            await session.execute(
                select(Task.id)
                .where(Task.superseded_by_encounter_id == task.encounter_id, Task.rule_id == task.rule_id)
                .order_by(Task.created_at)
            )
        )
        .scalars()
        .all()
        if task.encounter_id is not None
        else []
    )
    return TaskExplanation(
        task_id=task.id,
        type=task.type,
        status=task.status,
        rule=RuleRef(id=task.rule_id, version=task.rule_version),
        rule_description=rule.description if rule is not None else None,
        rule_version_current=rule is not None and rule.version == task.rule_version,
        triggering_events=[_triggering(event_id, by_id.get(event_id)) for event_id in task.triggering_event_ids],
        due_at=task.due_at,
        due_basis=task.due_basis,
        route_basis=task.route_basis,
        supersedes=list(supersedes),
        superseded_by_encounter_id=task.superseded_by_encounter_id,
        history=[
            HistoryEntry(
                at=h.at,
                actor=h.actor,
                action=h.action,
                from_status=h.from_status,
                to_status=h.to_status,
                detail=h.detail,
            )
            for h in history
        ],
    )


def _uuids(values: list[str]) -> list[uuid.UUID]:
    found = []
    for value in values:
        try:
            found.append(uuid.UUID(value))
        except ValueError:
            continue
    return found


def _triggering(event_id: str, event: InboundEvent | None) -> TriggeringEvent:
    if event is None:
        return TriggeringEvent(event_id=event_id, source=None, message_type=None, event_time=None, received_at=None)
    return TriggeringEvent(
        event_id=event_id,
        source=event.source,
        message_type=event.message_type,
        event_time=event.event_time,
        received_at=event.received_at,
    )


def _engine(request: Request) -> RuleEngine:
    return request.app.state.runtime.rule_engine


def _due_soon(request: Request) -> timedelta:
    return timedelta(hours=_engine(request).rules.lifecycle.due_soon_hours)


async def _visible_task(
    session: AsyncSession, request: Request, principal: Principal, task_id: uuid.UUID, what: str, *, write: bool = False
) -> Task | None:
    """The task when it is in the caller's scope (app/api/access.py); else None, which callers answer
    as 404 so a hidden task's existence is not disclosed. Audited either way."""
    settings = request.app.state.settings
    query = select(Task).where(Task.id == task_id)
    task = (await session.execute(query.with_for_update() if write else query)).scalar_one_or_none()
    visible = (
        task is not None
        and (
            await session.execute(select(Task.id).where(Task.id == task_id, *task_conditions(principal, settings)))
        ).first()
        is not None
    )
    record_audit(
        session,
        principal.subject,
        principal.roles,
        action=AuditAction.UPDATE if write else AuditAction.READ,
        resource_type="Task",
        request=what,
        patient_ids=[str(task.patient_id)] if task is not None else [],
        outcome=AuditOutcome.SUCCESS if visible else AuditOutcome.MINOR_FAILURE,
    )
    return task if visible else None


@router.post("/tasks/{task_id}/attempts", response_model=TaskOut)
async def log_attempt(request: Request, principal: CurrentPrincipal, task_id: uuid.UUID, body: AttemptIn) -> TaskOut:
    """Record an outreach attempt (reached, left-message, no-answer, wrong-number, declined). The
    configured number of unsuccessful attempts fails the task as "unable to reach"."""
    refused: Problem | None = None
    out: TaskOut | None = None
    async with request.app.state.runtime.sessions() as session, session.begin():
        task = await _visible_task(session, request, principal, task_id, f"POST /tasks/{task_id}/attempts", write=True)
        if task is not None:
            try:
                record_attempt(
                    session,
                    task,
                    outcome=body.outcome,
                    actor=f"user:{principal.subject}",
                    note=body.note,
                    max_failed=_engine(request).rules.lifecycle.max_failed_attempts,
                )
            except TransitionError as exc:
                refused = Problem(409, "Conflict", str(exc), field="status")
            else:
                await session.flush()
                patient = await session.get(Patient, task.patient_id) if task.patient_id else None
                out = _task_out(task, patient, utcnow(), _due_soon(request))
    if refused is not None:
        raise refused
    if out is None:
        raise Problem(404, "Not Found", "no such task", field="task_id")
    return out


@router.get("/tasks/escalated", response_model=TaskList)
async def escalated_queue(
    request: Request, principal: CurrentPrincipal, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> TaskList:
    """The supervisor queue: open tasks the escalation job found overdue, most overdue first, for the
    supervisor's teams (and tasks with no team)."""
    settings = request.app.state.settings
    if not principal.has_any_role(settings.supervisor_roles):
        raise Problem(403, "Forbidden", "the escalation queue is for supervisors", field="role")
    return await _task_list(
        request,
        principal,
        (Task.status.in_(ACTIVE_STATUSES), Task.escalated_at.is_not(None)),
        limit,
        "GET /tasks/escalated",
    )
