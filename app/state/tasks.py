"""Persist rule effects as tasks, once each, with a history row explaining where they came from."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Task, TaskHistory
from app.rules.due import anchor_of
from app.rules.engine import CreateTask
from app.rules.facts import OpenTask

INITIAL_STATUS = "ready"  # FHIR Task.status: ready to be performed, no action taken yet
ACTIVE_STATUSES = ("requested", "received", "accepted", "ready", "in-progress", "on-hold")


async def create_task_once(session: AsyncSession, effect: CreateTask, patient_id: uuid.UUID) -> Task | None:
    """Insert the task unless its dedupe key exists; returns the new task or None."""
    exists = await session.scalar(select(Task.id).where(Task.dedupe_key == effect.dedupe_key))
    if exists is not None:
        return None
    task = Task(
        dedupe_key=effect.dedupe_key,
        type=effect.type,
        status=INITIAL_STATUS,
        priority=effect.priority,
        role=effect.role,
        patient_id=patient_id,
        encounter_id=uuid.UUID(effect.encounter_id),
        due_at=effect.due_at,
        due_basis=effect.due_basis,
        route_basis=effect.route_basis,
        team=effect.team,
        rule_id=effect.rule_id,
        rule_version=effect.rule_version,
        triggering_event_ids=list(effect.triggering_event_ids),
    )
    session.add(task)
    await session.flush()
    session.add(
        TaskHistory(
            task_id=task.id,
            actor=f"rule:{effect.rule_id}@{effect.rule_version}",
            action="created",
            from_status=None,
            to_status=INITIAL_STATUS,
            detail={"triggering_event_ids": list(effect.triggering_event_ids), "due_basis": effect.due_basis},
        )
    )
    return task


async def open_tasks_for_patient(session: AsyncSession, patient_id: uuid.UUID) -> list[Task]:
    query = select(Task).where(Task.patient_id == patient_id, Task.status.in_(ACTIVE_STATUSES))
    return list((await session.execute(query)).scalars().all())


def cancel_task(session: AsyncSession, task: Task, *, reason: str, actor: str, event_id: str) -> None:
    """Cancel with a reason a facilitator can read; frees the dedupe key so the rule can fire again
    (a patient re-discharged after an A13 gets a fresh task)."""
    previous = task.status
    task.status = "cancelled"
    task.dedupe_key = f"{task.dedupe_key}|cancelled|{task.id}"
    session.add(
        TaskHistory(
            task_id=task.id,
            actor=actor,
            action="cancelled",
            from_status=previous,
            to_status="cancelled",
            detail={"reason": reason, "event_id": event_id},
        )
    )


def complete_task(session: AsyncSession, task: Task, *, reason: str, actor: str, evidence_event_id: str) -> None:
    """Evidence closed the loop (a follow-up visit after discharge): completed, with the evidence named."""
    previous = task.status
    task.status = "completed"
    session.add(
        TaskHistory(
            task_id=task.id,
            actor=actor,
            action="completed",
            from_status=previous,
            to_status="completed",
            detail={"reason": reason, "evidence_event_id": evidence_event_id},
        )
    )


def open_task_facts(tasks: list[Task]) -> tuple[OpenTask, ...]:
    """Open tasks as the rules see them; the anchor is where the due time was counted from."""
    return tuple(
        OpenTask(
            str(t.id),
            t.rule_id,
            str(t.encounter_id) if t.encounter_id else None,
            anchor_of(t.due_basis),
        )
        for t in tasks
    )
