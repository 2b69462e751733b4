"""Reading and settling the task outbox (rows are written by the task_history trigger, migration 0011)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Task, TaskHistory, TaskOutbox
from app.outbox.cloudevent import TaskChange


async def claim_unpublished(session: AsyncSession, limit: int) -> list[TaskChange]:
    """The oldest unpublished changes, oldest first. On PostgreSQL the outbox rows stay locked until
    the caller's transaction ends and other relays skip them (FOR UPDATE SKIP LOCKED), so two relays
    never publish the same change at the same time. SQLite has one writer: nothing to lock."""
    query = (
        select(TaskOutbox.history_id, TaskHistory, Task)
        .join(TaskHistory, TaskHistory.id == TaskOutbox.history_id)
        .join(Task, Task.id == TaskHistory.task_id)
        .where(TaskOutbox.published_at.is_(None))
        .order_by(TaskOutbox.history_id)
        .limit(limit)
    )
    if session.bind.dialect.name == "postgresql":
        query = query.with_for_update(of=TaskOutbox, skip_locked=True)
    rows = (await session.execute(query)).all()
    return [_change(history, task) for _, history, task in rows]


async def mark_published(session: AsyncSession, history_ids: Sequence[int], at: datetime) -> None:
    await session.execute(
        update(TaskOutbox)
        .where(TaskOutbox.history_id.in_(history_ids), TaskOutbox.published_at.is_(None))
        .values(published_at=at)
    )


async def unpublished_count(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).where(TaskOutbox.published_at.is_(None))) or 0)


def _change(history: TaskHistory, task: Task) -> TaskChange:
    return TaskChange(
        history_id=history.id,
        at=history.at,
        action=history.action,
        actor=history.actor,
        from_status=history.from_status,
        to_status=history.to_status,
        task_id=task.id,
        task_type=task.type,
        rule_id=task.rule_id,
        patient_id=task.patient_id,
        encounter_id=task.encounter_id,
        role=task.role,
        team=task.team,
        status=task.status,
        business_status=task.business_status,
        owner=task.owner,
        priority=task.priority,
        due_at=task.due_at,
        version=task.version,
    )
