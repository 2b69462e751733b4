"""Persist rule effects as tasks, once each, with a history row explaining where they came from."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ColumnElement, String, and_, cast, func, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Encounter, Task, TaskHistory, utcnow
from app.db.types import UTCDateTime
from app.rules.due import anchor_of
from app.rules.engine import AdvanceTask, CreateTask, Effects, ReopenTask
from app.rules.facts import ClosedTask, OpenTask
from app.tasks.lifecycle import (
    ACTIVE,
    ACTIVE_STATUSES,
    AttemptOutcome,
    TransitionError,
    after_attempt,
    check_transition,
    escalated_priority,
)
from app.tasks.referral import BusinessStatus, loop_move

INITIAL_STATUS = "ready"  # FHIR Task.status: ready to be performed, no action taken yet


async def create_task_once(
    session: AsyncSession, effect: CreateTask, patient_id: uuid.UUID | None, *, part2: bool = False
) -> Task | None:
    """Insert the task unless its dedupe key exists; returns the new task or None. Operational
    tasks (a missing roster file) have no patient and no encounter. `part2`: raised from substance-use
    data (a Part 2 screening); a task from a Part 2 encounter is labelled from the encounter."""
    exists = await session.scalar(select(Task.id).where(Task.dedupe_key == effect.dedupe_key))
    if exists is not None:
        return None
    encounter = await session.get(Encounter, uuid.UUID(effect.encounter_id)) if effect.encounter_id else None
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
        route_basis=effect.route_basis,
        team=effect.team,
        rule_id=effect.rule_id,
        rule_version=effect.rule_version,
        triggering_event_ids=list(effect.triggering_event_ids),
        business_status=effect.business_status,
        part2=part2 or bool(encounter is not None and encounter.part2),
    )
    session.add(task)
    await session.flush()
    _history(
        session,
        task,
        f"rule:{effect.rule_id}@{effect.rule_version}",
        "created",
        None,
        INITIAL_STATUS,
        {"triggering_event_ids": list(effect.triggering_event_ids), "due_basis": effect.due_basis},
    )
    if effect.completed_by:
        await session.flush()
        complete_task(
            session,
            task,
            reason=effect.completed_by,
            actor=f"rule:{effect.rule_id}@{effect.rule_version}",
            evidence_encounter_id=effect.completed_by_encounter,
        )
    return task


async def open_tasks_for_patient(session: AsyncSession, patient_id: uuid.UUID) -> list[Task]:
    query = select(Task).where(Task.patient_id == patient_id, Task.status.in_(ACTIVE_STATUSES))
    return list((await session.execute(query)).scalars().all())


CANCELLED = "cancelled"
CANCEL_KEY_SEPARATOR = "|cancelled|"


def cancel_task(
    session: AsyncSession,
    task: Task,
    *,
    reason: str,
    actor: str,
    event_id: str,
    superseded_by_encounter: str | None = None,
) -> None:
    """Cancel with a reason a facilitator can read; frees the dedupe key so the rule can fire again
    (a patient re-discharged after an A13 gets a fresh task)."""
    previous = task.status
    if superseded_by_encounter:
        task.superseded_by_encounter_id = uuid.UUID(superseded_by_encounter)
    check_transition(previous, CANCELLED)
    task.status = CANCELLED
    task.dedupe_key = f"{task.dedupe_key}{CANCEL_KEY_SEPARATOR}{task.id}"
    _history(
        session, task, actor, CANCELLED, previous, CANCELLED, cancel_detail(reason, event_id, superseded_by_encounter)
    )


def complete_task(
    session: AsyncSession,
    task: Task,
    *,
    reason: str,
    actor: str,
    evidence_event_id: str | None = None,
    business_status: str | None = None,
    evidence_encounter_id: str | None = None,
) -> None:
    """Evidence closed the loop (a follow-up visit after discharge): completed, with the evidence named.
    A referral loop closed by its summary takes that milestone as its business status."""
    previous = task.status
    if previous not in ACTIVE:  # evidence may close any open task, however far a person has taken it
        raise TransitionError(f"a {previous} task cannot be completed")
    task.status = "completed"
    if evidence_encounter_id:
        task.completed_by_encounter_id = uuid.UUID(evidence_encounter_id)
    detail: dict[str, Any] = {"reason": reason} | (
        {"evidence_event_id": evidence_event_id} if evidence_event_id else {}
    )
    if business_status is not None and task.business_status is not None:
        detail["business_status"] = [task.business_status, business_status]
        task.business_status = business_status
    _history(session, task, actor, "completed", previous, "completed", detail)


def set_business_status(
    session: AsyncSession,
    task: Task,
    *,
    business_status: str,
    status: str,
    actor: str,
    detail: dict[str, Any],
) -> None:
    """A referral loop milestone (app/tasks/referral.py decides whether the move is allowed)."""
    previous, previous_business = task.status, task.business_status
    task.status = status
    task.business_status = business_status
    _history(
        session,
        task,
        actor,
        BUSINESS_STATUS_ACTION,
        previous,
        status,
        {"business_status": [previous_business, business_status]} | detail,
    )


BUSINESS_STATUS_ACTION = "business-status"


def open_task_facts(tasks: list[Task]) -> tuple[OpenTask, ...]:
    """Open tasks as the rules see them; the anchor is where the due time was counted from."""
    return tuple(
        OpenTask(
            str(t.id),
            t.rule_id,
            str(t.encounter_id) if t.encounter_id else None,
            anchor_of(t.due_basis),
            tuple(t.triggering_event_ids or ()),
            t.business_status,
        )
        for t in tasks
    )


def record_attempt(
    session: AsyncSession, task: Task, *, outcome: AttemptOutcome, actor: str, note: str | None, max_failed: int
) -> Task:
    """Log an outreach attempt; the task starts, or fails when the patient cannot be reached."""
    result = after_attempt(task.status, outcome, task.failed_attempts, max_failed)
    previous = task.status
    task.failed_attempts = result.failed_attempts
    task.status = result.status
    _history(
        session,
        task,
        actor,
        "attempt",
        previous,
        result.status,
        {"outcome": outcome.value, "note": note, "failed_attempts": result.failed_attempts}
        | ({"reason": result.reason} if result.reason else {}),
    )
    return task


async def escalate_overdue(session: AsyncSession, now: datetime, *, limit: int = 1000) -> int:
    """Raise the priority of open tasks past due, once each, and mark them for the supervisor queue.
    Safe to run from several processes: a row is escalated only while `escalated_at` is unset."""
    overdue = (
        await session.execute(
            select(Task)
            .where(Task.status.in_(ACTIVE_STATUSES), Task.due_at <= now, Task.escalated_at.is_(None))
            .order_by(Task.due_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).scalars()
    count = 0
    for task in overdue:
        previous = task.priority
        task.priority = escalated_priority(previous)
        task.escalated_at = now
        _history(
            session,
            task,
            "system:escalation",
            "escalated",
            task.status,
            task.status,
            {"reason": "overdue", "due_at": task.due_at.isoformat(), "priority": [previous, task.priority]},
        )
        count += 1
    return count


async def overdue_counts(session: AsyncSession, now: datetime) -> dict[tuple[str, str], int]:
    """Open tasks past due by (type, role): what the overdue gauge shows and its runbook starts from."""
    rows = await session.execute(
        select(Task.type, Task.role, func.count())
        .where(Task.status.in_(ACTIVE_STATUSES), Task.due_at <= now)
        .group_by(Task.type, Task.role)
    )
    return {(task_type, role): count for task_type, role, count in rows.all()}


def _history(
    session: AsyncSession,
    task: Task,
    actor: str,
    action: str,
    from_status: str | None,
    to_status: str | None,
    detail: dict[str, Any],
) -> None:
    session.add(
        TaskHistory(
            task_id=task.id, actor=actor, action=action, from_status=from_status, to_status=to_status, detail=detail
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
        literal(cancel_detail(reason, event_id), JSON()),
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


REOPENED = "reopened"


async def reopen_task(session: AsyncSession, task: Task, reopen: ReopenTask, *, actor: str, event_id: str) -> bool:
    """Undo a completion or supersession whose encounter was cancelled: the task returns to the
    active status it had, takes its dedupe key back and drops the link. Deliberately outside the FHIR
    state machine (nothing leaves a closed status by a person's hand): the close itself was wrong.
    Returns False, leaving the task closed, when a newer task of the rule already holds its key."""
    previous = task.status
    key = task.dedupe_key.split(CANCEL_KEY_SEPARATOR, 1)[0]
    if key != task.dedupe_key:
        holder = await session.scalar(select(Task.id).where(Task.dedupe_key == key))
        if holder is not None:
            return False
        task.dedupe_key = key
    detail: dict[str, Any] = cancel_detail(reopen.reason, event_id, reopen.superseded_by_encounter)
    if task.business_status is not None and previous == "completed":  # a loop closed by its summary
        closing = await session.scalar(
            select(TaskHistory.detail)
            .where(TaskHistory.task_id == task.id, TaskHistory.action == "completed")
            .order_by(TaskHistory.id.desc())
            .limit(1)
        )
        moved = (closing or {}).get("business_status")
        if isinstance(moved, list) and moved:
            detail["business_status"] = [task.business_status, moved[0]]
            task.business_status = moved[0]
    task.status = reopen.status
    task.completed_by_encounter_id = None
    task.superseded_by_encounter_id = None
    _history(session, task, actor, REOPENED, previous, reopen.status, detail)
    return True


def closed_task_facts(tasks: list[Task], previous: dict[uuid.UUID, str]) -> tuple[ClosedTask, ...]:
    """Closed tasks as the reversal rules see them; `previous`: each one's status before it closed."""
    return tuple(
        ClosedTask(
            str(t.id),
            t.rule_id,
            t.status,
            previous.get(t.id, INITIAL_STATUS),
            anchor_of(t.due_basis),
            str(t.completed_by_encounter_id) if t.completed_by_encounter_id else None,
            str(t.superseded_by_encounter_id) if t.superseded_by_encounter_id else None,
        )
        for t in tasks
    )


def _advance(session: AsyncSession, task: Task, advance: AdvanceTask, actor: str) -> None:
    move = loop_move(task.status, task.business_status, BusinessStatus(advance.business_status), by_evidence=True)
    set_business_status(
        session,
        task,
        business_status=move.business_status,
        status=move.status,
        actor=actor,
        detail={"reason": advance.reason, "evidence_event_id": advance.evidence_event_id},
    )


# Task-history detail key naming the encounter a supersession (a readmission) came from, on the
# "cancelled" entry it wrote and the "reopened" entry of its voiding. The explain hides such an entry's
# reason from callers who may not see that encounter (42 CFR Part 2, app/api/tasks.py): the decision reads
# this key, never the reason's wording.
SUPERSEDED_BY_KEY = "superseded_by_encounter_id"


def cancel_detail(reason: str, event_id: str, superseded_by_encounter: str | None = None) -> dict[str, Any]:
    detail: dict[str, Any] = {"reason": reason, "event_id": event_id}
    if superseded_by_encounter:
        detail[SUPERSEDED_BY_KEY] = superseded_by_encounter
    return detail


async def apply_effects(
    session: AsyncSession,
    effects: Effects,
    open_tasks: list[Task],
    patient_id: uuid.UUID,
    *,
    actor: str,
    event_id: str,
    part2: bool = False,
) -> tuple[int, int]:
    """Persist what the rules decided for one event, in order: completions, cancellations, then new
    tasks (once each). Returns (created, cancelled)."""
    by_id = {str(t.id): t for t in open_tasks}
    for done in effects.complete:
        complete_task(
            session,
            by_id[done.task_id],
            reason=done.reason,
            actor=actor,
            evidence_event_id=done.evidence_event_id,
            business_status=done.business_status,
            evidence_encounter_id=done.evidence_encounter_id,
        )
    for reopen in effects.reopen:
        await reopen_task(session, by_id[reopen.task_id], reopen, actor=actor, event_id=event_id)
    for advance in effects.advance:
        _advance(session, by_id[advance.task_id], advance, actor)
    for cancel in effects.cancel:
        cancel_task(
            session,
            by_id[cancel.task_id],
            reason=cancel.reason,
            actor=actor,
            event_id=event_id,
            superseded_by_encounter=cancel.superseded_by_encounter,
        )
    await session.flush()
    created = 0
    for effect in effects.create:
        if await create_task_once(session, effect, patient_id, part2=part2) is not None:
            created += 1
    return created, len(effects.cancel)
