"""The transactional outbox: every task change becomes one CloudEvent on the task-events topic."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from unittest import mock

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import Task, TaskHistory, TaskOutbox, utcnow
from app.messaging.producer import Publisher
from app.metrics import sample
from app.outbox.cloudevent import CONTENT_TYPE, event_id
from app.outbox.relay import OutboxRelay, Pruning
from app.runtime import Runtime
from app.settings import Settings
from app.state.tasks import cancel_tasks_where
from tests.conftest import bearer, eventually
from tests.hl7_builder import adt
from tests.integration.test_adt_pipeline import produce
from tests.integration.test_worklists import seed
from tests.topic_reader import read_topic


async def history_ids(db: AsyncEngine) -> set[int]:
    async with db.connect() as conn:
        return set((await conn.scalars(select(TaskHistory.id))).all())


async def unpublished(db: AsyncEngine) -> int:
    async with db.connect() as conn:
        return int(await conn.scalar(select(func.count()).where(TaskOutbox.published_at.is_(None))) or 0)


async def discharge(settings: Settings, n: int) -> None:
    await produce(
        settings,
        *(adt(control_id=f"OB-{i}", mrn=f"MRN-OB-{i}", visit_number=f"V-OB-{i}").encode() for i in range(n)),
    )


async def test_every_task_change_is_published_as_one_cloudevent(
    runtime: Runtime, settings: Settings, client: httpx.AsyncClient, token_for: Callable[..., str], db: AsyncEngine
) -> None:
    await discharge(settings, 3)
    pmc = token_for("PMC")
    tasks = await eventually(lambda: _tasks(client, pmc), timeout_s=20)
    assert len(tasks) == 3
    claimed = await client.post(f"/tasks/{tasks[0]['id']}/claim", headers={**bearer(pmc), "If-Match": 'W/"1"'})
    assert claimed.status_code == 200, claimed.text

    assert await eventually(lambda: _none_unpublished(db), timeout_s=20)
    changes = await history_ids(db)
    assert len(changes) == 4  # three created, one claimed
    received = await eventually(lambda: _read_at_least(settings, len(changes)))
    assert sorted(r.event["id"] for r in received) == sorted(event_id(h) for h in changes)
    for r in received:
        event = r.event
        assert event["specversion"] == "1.0" and event["source"] and event["type"].startswith("org.carecoord.task.")
        assert r.headers["content-type"].decode() == CONTENT_TYPE
        task = event["data"]["task"]
        assert r.key == task["patient_id"].encode() == event["partitionkey"].encode()  # keyed by patient
        assert event["subject"] == task["id"]
    claim = next(r.event for r in received if r.event["type"] == "org.carecoord.task.claim")
    assert claim["data"]["task"]["owner"] == "tester" and claim["subject"] == tasks[0]["id"]
    assert "MRN" not in str([r.event for r in received])  # no patient identifiers on the topic
    assert (sample("carecoord_outbox_published_total") or 0) >= len(changes)


async def test_relay_dying_between_ack_and_mark_publishes_the_same_ids_again(
    settings: Settings, db: AsyncEngine
) -> None:
    settings = settings.model_copy(update={"outbox_relay_enabled": False})
    async with Runtime(settings) as rt:
        await discharge(settings, 4)
        assert await eventually(lambda: _history_count_at_least(db, 4))
        assert rt.relay is None and await unpublished(db) == 4
        relay = _relay(rt, settings)
        with (
            mock.patch("app.outbox.relay.mark_published", side_effect=ConnectionResetError("died after the ack")),
            pytest.raises(ConnectionResetError),
        ):
            await relay.publish_pending()
        assert await unpublished(db) == 4  # published, but not marked: the next pass sends them again
        assert await relay.publish_pending() == 4
        assert await unpublished(db) == 0
        received = await read_topic(rt.bootstrap, settings.topics.task_events)
    ids = Counter(r.event["id"] for r in received)
    assert set(ids.values()) == {2}, "each change twice, under the same id"
    assert set(ids) == {event_id(h) for h in await history_ids(db)}


async def test_bulk_cancellation_writes_outbox_rows_in_its_transaction(settings: Settings, db: AsyncEngine) -> None:
    settings = settings.model_copy(update={"outbox_relay_enabled": False})
    async with Runtime(settings) as rt:
        await discharge(settings, 3)
        assert await eventually(lambda: _history_count_at_least(db, 3))
        assert rt.sessions is not None
        async with rt.sessions() as session:
            async with session.begin():
                cancelled = await cancel_tasks_where(
                    session, Task.type == "post-discharge-contact", reason="test", actor="test", event_id="e"
                )
                assert cancelled == 3
                await session.rollback()  # rolled back: no outbox row survives without its change
            assert await unpublished(db) == 3
            async with session.begin():
                await cancel_tasks_where(
                    session, Task.type == "post-discharge-contact", reason="test", actor="test", event_id="e"
                )
    assert await unpublished(db) == 6
    async with db.connect() as conn:
        outboxed = set((await conn.scalars(select(TaskOutbox.history_id))).all())
    assert outboxed == await history_ids(db)


@pytest.mark.postgresql(reason="claiming with FOR UPDATE SKIP LOCKED is PostgreSQL's; SQLite runs one relay")
async def test_two_relays_never_publish_the_same_change_twice(settings: Settings, db: AsyncEngine) -> None:
    settings = settings.model_copy(update={"outbox_relay_enabled": False, "outbox_relay_batch": 7})
    async with Runtime(settings) as rt:
        await discharge(settings, 60)
        assert await eventually(lambda: _history_count_at_least(db, 60), timeout_s=30)
        second = Publisher(rt.kafka, settings)
        await second.start()
        try:
            relays = [_relay(rt, settings), _relay(rt, settings, publisher=second)]

            async def drain(relay: OutboxRelay) -> None:
                published = 1
                while published:
                    published = await relay.publish_pending()

            await asyncio.gather(*(drain(r) for r in relays))
        finally:
            await second.stop()
        received = await read_topic(rt.bootstrap, settings.topics.task_events)
    ids = Counter(r.event["id"] for r in received)
    assert len(ids) == 60 and set(ids.values()) == {1}


def _relay(
    rt: Runtime, settings: Settings, publisher: Publisher | None = None, pruning: Pruning | None = None
) -> OutboxRelay:
    assert rt.sessions is not None and rt.publisher is not None
    return OutboxRelay(
        sessions=rt.sessions,
        publisher=publisher or rt.publisher,
        topic=settings.topics.task_events,
        batch=settings.outbox_relay_batch,
        idle_s=0.1,
        retry_initial_s=0.1,
        retry_max_s=1,
        pruning=pruning,
    )


async def _tasks(client: httpx.AsyncClient, token: str) -> list[dict]:
    resp = await client.get("/tasks", params={"role": "PMC"}, headers=bearer(token))
    items = resp.json()["items"]
    return items if len(items) == 3 else []


async def _none_unpublished(db: AsyncEngine) -> bool:
    return await unpublished(db) == 0


async def _history_count_at_least(db: AsyncEngine, n: int) -> bool:
    return len(await history_ids(db)) >= n


async def _read_at_least(settings: Settings, n: int) -> list:
    received = await read_topic(settings.kafka_bootstrap_servers or "", settings.topics.task_events)
    return received if len(received) >= n else []


async def _history(runtime: Runtime, n: int) -> list[int]:
    """`n` changes of one task; the task_history trigger writes their outbox rows."""
    task = await seed(runtime)
    async with runtime.sessions() as session, session.begin():
        rows = [TaskHistory(task_id=task.id, actor="tester", action="note") for _ in range(n)]
        session.add_all(rows)
    return [r.id for r in rows]


async def _publish_at(db: AsyncEngine, ids: list[int], at: datetime) -> None:
    async with db.begin() as conn:
        await conn.execute(update(TaskOutbox).where(TaskOutbox.history_id.in_(ids)).values(published_at=at))


async def _outbox_ids(db: AsyncEngine) -> set[int]:
    async with db.connect() as conn:
        return set((await conn.scalars(select(TaskOutbox.history_id))).all())


async def test_published_rows_past_retention_are_pruned_and_the_rest_kept(settings: Settings, db: AsyncEngine) -> None:
    settings = settings.model_copy(
        update={"outbox_relay_enabled": False, "outbox_retention_days": 7, "outbox_relay_batch": 2}
    )
    async with Runtime(settings, run_consumers=False) as rt:
        old, recent, pending = await _history(rt, 5), await _history(rt, 2), await _history(rt, 2)
        now = utcnow()
        await _publish_at(db, old, now - timedelta(days=8))
        await _publish_at(db, recent, now - timedelta(days=6))
        assert pending[0] in await _outbox_ids(db)  # unpublished: written by the trigger, never pruned
        relay = _relay(rt, settings, pruning=Pruning.of(settings))
        assert [await relay.prune_batch() for _ in range(4)] == [2, 2, 1, 0]  # a batch (2) per transaction
        assert await _outbox_ids(db) == set(recent) | set(pending)


async def test_the_relay_prunes_between_passes_and_keeps_what_is_within_retention(
    settings: Settings, db: AsyncEngine
) -> None:
    interval_s = 0.2
    settings = settings.model_copy(
        update={"outbox_retention_days": 1, "outbox_prune_interval_s": interval_s, "outbox_relay_batch": 2}
    )
    async with Runtime(settings, run_consumers=False) as rt:
        expired, kept = await _history(rt, 5), await _history(rt, 2)
        assert await eventually(lambda: _none_unpublished(db), timeout_s=20)  # the runtime's relay published them
        await _publish_at(db, expired, utcnow() - timedelta(days=2))
        # Five expired rows, batches of two: three batches, one after each pass.
        assert await eventually(lambda: _outbox_ids_without(db, expired), timeout_s=20)
        await asyncio.sleep(3 * interval_s)
        assert set(kept) <= await _outbox_ids(db)  # published a moment ago: within retention


async def _outbox_ids_without(db: AsyncEngine, ids: list[int]) -> bool:
    return not (await _outbox_ids(db)) & set(ids)
