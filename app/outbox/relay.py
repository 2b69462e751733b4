"""The outbox relay: publishes task changes from `task_outbox` to the task-events topic.

At least once, with a stable CloudEvents `id` per change, so exactly once for a subscriber that
dedupes on it: a row is marked published only after the broker acked it; a relay that dies between
the ack and the mark publishes the same change again, with the same id. Several relays may run
(one per `serve`/`consume` process): on PostgreSQL each claims its rows with FOR UPDATE SKIP LOCKED
and holds them until marked, so they never publish the same rows at once. Published rows are deleted
once past their retention (`prune_batch`, a batch after a pass when due), so the table stays small.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import async_sessionmaker

from app.db.models import utcnow
from app.messaging.producer import Publisher
from app.metrics import OUTBOX_OLDEST_UNPUBLISHED, OUTBOX_PUBLISHED, OUTBOX_RELAY_FAILURES
from app.outbox.cloudevent import CONTENT_TYPE, TaskChange, encode, partition_key, to_cloudevent
from app.settings import Settings
from app.state.outbox import claim_unpublished, mark_published, prune_published

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Pruning:
    """Published rows older than `retention` are deleted; due every `interval_s`."""

    retention: timedelta
    interval_s: float

    @classmethod
    def of(cls, settings: Settings) -> Pruning | None:
        """CARECOORD_OUTBOX_RETENTION_DAYS (0: published rows are kept) and CARECOORD_OUTBOX_PRUNE_INTERVAL_S."""
        if settings.outbox_retention_days <= 0:
            return None
        return cls(timedelta(days=settings.outbox_retention_days), settings.outbox_prune_interval_s)


class OutboxRelay:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker,
        publisher: Publisher,
        topic: str,
        batch: int,
        idle_s: float,
        retry_initial_s: float,
        retry_max_s: float,
        pruning: Pruning | None = None,
    ) -> None:
        self._sessions = sessions
        self._publisher = publisher
        self._topic = topic
        self._batch = batch
        self._idle_s = idle_s
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._pruning = pruning  # None: published rows are kept
        self._next_prune = time.monotonic()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self, timeout_s: float) -> None:
        """Let the pass in flight finish (its rows are then marked); cut it short after `timeout_s`:
        unmarked rows stay in the outbox and are published again by the next relay."""
        self._stopping.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

    async def publish_pending(self) -> int:
        """One pass: claim up to a batch, publish, mark. Returns how many changes were published."""
        async with self._sessions() as session:
            if session.bind.dialect.name == "postgresql":
                async with session.begin():  # the claimed rows stay locked until marked
                    changes = await claim_unpublished(session, self._batch)
                    await self._publish(changes)
                    await mark_published(session, [c.history_id for c in changes], utcnow())
            else:
                # SQLite: a read transaction that later wrote could fail on another writer's commit;
                # with one writer there is nobody to lock out, so read, publish, then mark.
                async with session.begin():
                    changes = await claim_unpublished(session, self._batch)
                await self._publish(changes)
                async with session.begin():
                    await mark_published(session, [c.history_id for c in changes], utcnow())
        if changes:
            OUTBOX_PUBLISHED.inc(len(changes))
        return len(changes)

    async def prune_batch(self) -> int:
        """Delete up to a batch of the published rows past retention (one transaction); how many went."""
        if self._pruning is None:
            return 0
        async with self._sessions() as session, session.begin():
            return await prune_published(session, utcnow() - self._pruning.retention, self._batch)

    async def _prune_when_due(self) -> None:
        """One batch after a pass, when due: a backlog of expired rows (the first run after an upgrade)
        is deleted a batch per pass, between publishing passes, never instead of them."""
        if self._pruning is None or time.monotonic() < self._next_prune:
            return
        try:
            pruned = await self.prune_batch()
        except Exception as exc:  # an outage: the rows wait for the next interval, publishing goes on
            log.warning("outbox pruning failed; will retry", extra={"error": type(exc).__name__})
            pruned = 0
        if pruned:
            log.info("published outbox rows pruned", extra={"rows": pruned})
        if pruned < self._batch:  # caught up until the next interval
            self._next_prune = time.monotonic() + self._pruning.interval_s

    async def _publish(self, changes: list[TaskChange]) -> None:
        if not changes:
            OUTBOX_OLDEST_UNPUBLISHED.set(0)
            return
        age = (utcnow() - changes[0].at).total_seconds()
        OUTBOX_OLDEST_UNPUBLISHED.set(age)
        records = [(partition_key(c), encode(to_cloudevent(c))) for c in changes]
        await self._publisher.publish_many(self._topic, records, headers={"content-type": CONTENT_TYPE})

    async def _run(self) -> None:
        delay = self._retry_initial_s
        while not self._stopping.is_set():
            try:
                published = await self.publish_pending()
                delay = self._retry_initial_s
                await self._prune_when_due()
            except Exception as exc:  # a database or broker outage: back off, the rows wait in the outbox
                OUTBOX_RELAY_FAILURES.inc()
                log.warning(
                    "outbox relay pass failed; will retry", extra={"error": type(exc).__name__, "retry_in_s": delay}
                )
                await self._sleep(delay)
                delay = min(delay * 2, self._retry_max_s)
                continue
            if published < self._batch:
                await self._sleep(self._idle_s)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
