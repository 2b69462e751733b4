"""Reading and settling the task outbox (rows are written by the task_history trigger, migration 0011)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Task, TaskHistory, TaskOutbox
from app.outbox.cloudevent import TaskChange


async def claim_unpublished(session: AsyncSession, limit: int) -> list[TaskChange]:
    """The oldest unpublished changes, oldest first. On PostgreSQL the outbox rows stay locked until
    the caller's transaction ends and other relays skip them (FOR UPDATE SKIP LOCKED), so two relays
    never publish the same change at the same time. SQLite has one writer: nothing to lock.
    Plain columns, not ORM objects: the relay reads every change once, and rows are cheaper."""
    h, t = TaskHistory, Task
    query = (
        select(
            h.id,
            h.at,
            h.action,
            h.actor,
            h.from_status,
            h.to_status,
            t.id,
            t.type,
            t.rule_id,
            t.patient_id,
            t.encounter_id,
            t.role,
            t.team,
            t.status,
            t.business_status,
            t.owner,
            t.priority,
            t.due_at,
            t.version,
        )
        .select_from(TaskOutbox)
        .join(h, h.id == TaskOutbox.history_id)
        .join(t, t.id == h.task_id)
        .where(TaskOutbox.published_at.is_(None))
        .order_by(TaskOutbox.history_id)
        .limit(limit)
    )
    if session.bind.dialect.name == "postgresql":
        query = query.with_for_update(of=TaskOutbox, skip_locked=True)
    return [TaskChange(*row) for row in (await session.execute(query)).all()]


async def mark_published(session: AsyncSession, history_ids: Sequence[int], at: datetime) -> None:
    await session.execute(
        update(TaskOutbox)
        .where(TaskOutbox.history_id.in_(history_ids), TaskOutbox.published_at.is_(None))
        .values(published_at=at)
    )


async def unpublished_count(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).where(TaskOutbox.published_at.is_(None))) or 0)


async def prune_published(session: AsyncSession, published_before: datetime, limit: int) -> int:
    """Delete up to `limit` outbox rows published before `published_before`; how many went. The topic
    holds the events and task_history the changes: a published row only waits to be pruned. Unpublished
    rows are never touched. On PostgreSQL rows another relay is pruning are skipped, not waited for."""
    expired = select(TaskOutbox.history_id).where(TaskOutbox.published_at < published_before).limit(limit)
    if session.bind.dialect.name == "postgresql":
        expired = expired.with_for_update(skip_locked=True)
    result = await session.execute(delete(TaskOutbox).where(TaskOutbox.history_id.in_(expired.scalar_subquery())))
    return int(result.rowcount or 0)
