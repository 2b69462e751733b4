"""Persist rule effects as tasks, once each, with a history row explaining where they came from."""

from __future__ import annotations

import uuid

from sqlalchemy import JSON, ColumnElement, String, and_, cast, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Task, TaskHistory, utcnow
from app.db.types import UTCDateTime
from app.rules.engine import CreateTask

INITIAL_STATUS = "ready"  # FHIR Task.status: ready to be performed, no action taken yet
ACTIVE_STATUSES = ("requested", "received", "accepted", "ready", "in-progress", "on-hold")


async def create_task_once(session: AsyncSession, effect: CreateTask, patient_id: uuid.UUID | None) -> Task | None:
    """Insert the task unless its dedupe key exists; returns the new task or None. Operational
    tasks (a missing roster file) have no patient and no encounter."""
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
        encounter_id=uuid.UUID(effect.encounter_id) if effect.encounter_id else None,
        due_at=effect.due_at,
        due_basis=effect.due_basis,
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


async def open_tasks_for_encounter(session: AsyncSession, encounter_id: uuid.UUID) -> list[Task]:
    query = select(Task).where(Task.encounter_id == encounter_id, Task.status.in_(ACTIVE_STATUSES))
    return list((await session.execute(query)).scalars().all())


async def open_tasks_for_patient(session: AsyncSession, patient_id: uuid.UUID) -> list[Task]:
    query = select(Task).where(Task.patient_id == patient_id, Task.status.in_(ACTIVE_STATUSES))
    return list((await session.execute(query)).scalars().all())


CANCELLED = "cancelled"
CANCEL_KEY_SEPARATOR = "|cancelled|"


def cancel_task(session: AsyncSession, task: Task, *, reason: str, actor: str, event_id: str) -> None:
    """Cancel with a reason a facilitator can read; frees the dedupe key so the rule can fire again
    (a patient re-discharged after an A13 gets a fresh task)."""
    previous = task.status
    task.status = CANCELLED
    task.dedupe_key = f"{task.dedupe_key}{CANCEL_KEY_SEPARATOR}{task.id}"
    session.add(
        TaskHistory(
            task_id=task.id,
            actor=actor,
            action=CANCELLED,
            from_status=previous,
            to_status=CANCELLED,
            detail=_cancel_detail(reason, event_id),
        )
    )


async def cancel_tasks_where(
    session: AsyncSession, where: ColumnElement[bool], *, reason: str, actor: str, event_id: str
) -> int:
    """`cancel_task` for every active task matching `where`, in two statements: a roster can
    disenroll thousands of members at once. Returns how many were cancelled."""
    t = Task.__table__
    active = and_(where, t.c.status.in_(ACTIVE_STATUSES))
    now = literal(utcnow(), UTCDateTime())
    history = select(
        t.c.id,
        now,
        literal(actor),
        literal(CANCELLED),
        t.c.status,
        literal(CANCELLED),
        literal(_cancel_detail(reason, event_id), JSON()),
    ).where(active)
    await session.execute(
        insert(TaskHistory.__table__).from_select(
            ["task_id", "at", "actor", "action", "from_status", "to_status", "detail"], history
        )
    )
    result = await session.execute(
        update(t)
        .where(active)
        .values(
            status=CANCELLED,
            dedupe_key=t.c.dedupe_key + CANCEL_KEY_SEPARATOR + cast(t.c.id, String),
            version=t.c.version + 1,
            updated_at=now,
        )
    )
    return result.rowcount  # type: ignore[attr-defined,no-any-return]


def _cancel_detail(reason: str, event_id: str) -> dict[str, str]:
    return {"reason": reason, "event_id": event_id}
