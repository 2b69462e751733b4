"""Task worklist: `GET /tasks`, scoped to the caller's roles unless the caller supervises."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from sqlalchemy import or_, select

from app.api.auth import CurrentPrincipal, may_see_part2
from app.api.problems import Problem
from app.api.schemas import PatientSummary, RuleRef, TaskList, TaskOut
from app.db.models import Encounter, Patient, Task
from app.state.audit import AuditAction, record_audit
from app.state.tasks import ACTIVE_STATUSES

router = APIRouter(tags=["tasks"])

TASK_STATUSES = (
    *ACTIVE_STATUSES,
    "draft",
    "rejected",
    "cancelled",
    "completed",
    "failed",
    "entered-in-error",
)


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for raw in values or [] for v in raw.split(",") if v.strip()]


def _display_name(patient: Patient) -> str | None:
    parts = [p for p in (patient.given_name, patient.family_name) if p]
    return " ".join(parts) or None


def _task_out(task: Task, patient: Patient | None) -> TaskOut:
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
        rule=RuleRef(id=task.rule_id, version=task.rule_version),
        triggering_event_ids=task.triggering_event_ids,
        created_at=task.created_at,
        updated_at=task.updated_at,
        version=task.version,
    )


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
    unknown = sorted(set(statuses) - set(TASK_STATUSES))
    if unknown:
        raise Problem(422, "Request is not valid", f"unknown task status: {', '.join(unknown)}", field="status")

    query = (
        select(Task, Patient)
        .outerjoin(Patient, Patient.id == Task.patient_id)
        .outerjoin(Encounter, Encounter.id == Task.encounter_id)
        .where(Task.role.in_(roles), Task.status.in_(statuses))
        .order_by(Task.due_at, Task.id)
        .limit(limit)
    )
    if not may_see_part2(principal, settings):
        # The FHIR API hides Part 2 encounters; their tasks (name, discharge time) are hidden alike.
        query = query.where(or_(Encounter.part2.is_(False), Encounter.id.is_(None)))
    async with request.app.state.runtime.sessions() as session, session.begin():
        rows = (await session.execute(query)).all()
        items = [_task_out(task, patient) for task, patient in rows]
        record_audit(
            session,
            principal.subject,
            principal.roles,
            action=AuditAction.READ,
            resource_type="Task",
            request=f"GET /tasks role={','.join(roles)}",
            patient_ids=[str(item.patient.id) for item in items if item.patient],
        )
    return TaskList(items=items, count=len(items))
