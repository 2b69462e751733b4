"""Apply a person's action to one task: lock the row, check scope and version, write task and history.

Concurrency: the first statement of the transaction is a no-op UPDATE of the task's row. On
PostgreSQL that takes the row lock, so a second claim waits and then sees the first one's owner (409);
on SQLite it takes the database write lock up front (the same serialisation; a read transaction that
later tried to write would fail with SQLITE_BUSY_SNAPSHOT instead of waiting). The ORM's version
column (`tasks.version`) is a last guard: an update that finds another version changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Task, TaskHistory
from app.tasks.actions import Action, ActionRefused, Change, Request, TaskState, decide


async def lock_task(session: AsyncSession, task_id: uuid.UUID) -> None:
    t = Task.__table__
    await session.execute(update(t).where(t.c.id == task_id).values(updated_at=t.c.updated_at))


async def load_visible(
    session: AsyncSession, task_id: uuid.UUID, scope: Sequence[ColumnElement[bool]]
) -> tuple[Task | None, bool]:
    """(task, visible): the task row if it exists, and whether it is in the caller's scope."""
    task = (await session.execute(select(Task).where(Task.id == task_id))).scalar_one_or_none()
    if task is None:
        return None, False
    visible = (await session.execute(select(Task.id).where(Task.id == task_id, *scope))).first() is not None
    return task, visible


async def load_for_update(
    session: AsyncSession, task_id: uuid.UUID, scope: Sequence[ColumnElement[bool]]
) -> tuple[Task | None, bool]:
    """`load_visible` behind the row lock: the first statement of a transaction that changes a task."""
    await lock_task(session, task_id)
    return await load_visible(session, task_id, scope)


async def apply_to_locked(
    session: AsyncSession, task: Task, requests: Sequence[Request], *, note: str | None = None
) -> ActionRefused | None:
    """Apply the requests in order, all or none (a FHIR update may change owner and status at once):
    each is decided on the state the previous one leaves, and nothing is written if any is refused.
    One row update, so one new version, however many steps. `task` comes from `load_for_update` in
    the same transaction. Returns the refusal, or None when applied."""
    state = TaskState(task.status, task.owner, task.version)
    changes: list[tuple[Change, Request]] = []
    try:
        for request in requests:
            change = decide(state, request)
            changes.append((change, request))
            state = TaskState(change.status, change.owner, state.version)
    except ActionRefused as refused:
        return refused
    applied = [(c, r) for c, r in changes if c.changed]
    for change, request in applied:
        write_change(session, task, change, request, note=note)
    if applied:
        await session.flush()
    return None


def write_change(session: AsyncSession, task: Task, change: Change, request: Request, *, note: str | None) -> None:
    previous_status, previous_owner = task.status, task.owner
    task.status = change.status
    task.owner = change.owner
    if change.business_status is not None:
        task.business_status = change.business_status
    detail: dict[str, Any] = {}
    if previous_owner != change.owner:
        detail["owner"] = [previous_owner, change.owner]
    if request.outcome is not None and request.action is Action.COMPLETE:
        detail["outcome"] = request.outcome
    if request.reason is not None:
        detail["reason"] = request.reason
    if note:
        detail["note"] = note
    session.add(
        TaskHistory(
            task_id=task.id,
            actor=f"user:{request.actor}",
            action=request.action.value,
            from_status=previous_status,
            to_status=change.status,
            detail=detail,
        )
    )
