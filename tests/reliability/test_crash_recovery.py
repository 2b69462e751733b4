"""Crash test (issue 9): a consumer process killed with SIGKILL at random points, again and again,
ends with the same encounters and tasks as a clean run of the same stream, and the outbox published
every task change. Also: SIGTERM shuts a consumer down cleanly.

Size: CARECOORD_CRASH_EVENTS (default 20,000) events, CARECOORD_CRASH_KILLS (default 10) kills."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.migrate import recreate_schema
from app.db.models import InboundEvent, TaskHistory, TaskOutbox
from app.db.session import create_engine
from app.messaging.kafka_clients import KafkaConnection
from app.messaging.topics import TopicSpec, ensure_topics, topic_specs
from app.outbox.cloudevent import event_id
from app.settings import Settings
from tests.conftest import database_beside, eventually
from tests.reliability.event_mix import event_mix
from tests.reliability.harness import (
    ConsumerProcess,
    committed_offsets,
    consumer_env,
    count,
    discharges,
    outcome,
    publish,
    wait_caught_up,
)
from tests.topic_reader import read_topic

CRASH_EVENTS = int(os.environ.get("CARECOORD_CRASH_EVENTS", "20000"))
CRASH_KILLS = int(os.environ.get("CARECOORD_CRASH_KILLS", "10"))
SESSION_TIMEOUT_MS = 12000
SHIPPED_RULES = Path(__file__).resolve().parents[2] / "app" / "rules" / "default_rules.toml"


@pytest.fixture
async def clean_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A second database beside the test one, for the clean run."""
    engine = create_engine(await database_beside(database_url, "clean_run"))
    await recreate_schema(engine)
    yield engine
    await engine.dispose()


def _topics(settings: Settings) -> dict[str, str]:
    return {"adt": settings.topics.adt, "fhir": settings.topics.fhir}


def _groups(settings: Settings) -> dict[str, str]:
    return {settings.consumer_group: settings.topics.adt, f"{settings.consumer_group}-fhir": settings.topics.fhir}


async def _create_topics(settings: Settings, *extra: str) -> None:
    specs = topic_specs(settings)
    specs += [
        TopicSpec(
            name, settings.kafka_partitions, settings.kafka_retention_ms, "test", settings.broker_message_max_bytes
        )
        for name in extra
    ]
    await ensure_topics(KafkaConnection.from_settings(settings, settings.kafka_bootstrap_servers or ""), specs, 1)


async def _wait_outbox_empty(engine: AsyncEngine, timeout_s: float) -> None:
    unpublished = select(func.count()).where(TaskOutbox.published_at.is_(None))

    async def empty() -> bool:
        return await count(engine, unpublished) == 0

    assert await eventually(empty, timeout_s=timeout_s, interval_s=0.5), "outbox rows left unpublished"


@pytest.mark.postgresql(reason="a clean run in a second database and minutes of work: too slow to repeat on SQLite")
async def test_sigkilled_consumer_ends_like_a_clean_run(
    settings: Settings, database_url: str, db: AsyncEngine, clean_engine: AsyncEngine, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"rules_file": SHIPPED_RULES})
    clean = settings.model_copy(
        update={
            "consumer_group": f"{settings.consumer_group}-clean",
            "topics": settings.topics.model_copy(update={"task_events": f"{settings.topics.task_events}-clean"}),
        }
    )
    await _create_topics(settings, clean.topics.task_events)
    messages = event_mix(CRASH_EVENTS)
    assert len(messages) >= CRASH_EVENTS
    bootstrap = settings.kafka_bootstrap_servers or ""

    clean_url = clean_engine.url.render_as_string(hide_password=False)
    clean_run = ConsumerProcess(consumer_env(clean, database_url=clean_url), tmp_path / "clean.log")
    crashing = ConsumerProcess(consumer_env(settings, database_url=database_url), tmp_path / "crash.log")
    rng = random.Random(20261124)
    applied_at_kill: list[int] = []
    try:
        clean_run.start()
        crashing.start()
        stream = asyncio.create_task(publish(bootstrap, _topics(settings), messages, pause_s=0.5))
        applied = select(func.count()).select_from(InboundEvent)
        progress = 0
        share = len(messages) // (CRASH_KILLS + 2)
        for _ in range(CRASH_KILLS):
            # Each restarted process applies a random share of the stream, then dies at a random instant.
            target = progress + rng.randint(share // 4, share)

            async def progressed(target: int = target) -> bool:
                return await count(db, applied) >= target

            await eventually(progressed, timeout_s=120, interval_s=0.05)
            await asyncio.sleep(rng.uniform(0, 0.3))
            crashing.kill()
            progress = await count(db, applied)
            applied_at_kill.append(progress)
            crashing.start()
        await stream
        groups = _groups(settings) | _groups(clean)
        await wait_caught_up(bootstrap, groups, timeout_s=300)
        await _wait_outbox_empty(db, 60)
        await _wait_outbox_empty(clean_engine, 60)
        assert crashing.terminate() == 0
        assert clean_run.terminate() == 0
    finally:
        crashing.ensure_stopped()
        clean_run.ensure_stopped()

    print(f"applied events when each kill landed: {applied_at_kill}")
    assert len(applied_at_kill) >= CRASH_KILLS
    assert applied_at_kill[0] > 0 and applied_at_kill[-1] < len(messages), "every kill landed mid-stream"
    assert len(set(applied_at_kill)) == len(applied_at_kill), "each restarted process applied events before dying"
    crashed, expected = await outcome(db), await outcome(clean_engine)
    assert sum(expected["tasks"].values()) > CRASH_EVENTS // 10 and sum(expected["encounters"].values()) > 1000
    for table in expected:
        lost = expected[table] - crashed[table]
        doubled = crashed[table] - expected[table]
        assert not lost and not doubled, f"{table}: {sum(lost.values())} lost, {sum(doubled.values())} extra"

    # Every task change went through the outbox and is on the task-events topic, under its stable id.
    async with db.connect() as conn:
        changes = set((await conn.scalars(select(TaskHistory.id))).all())
        outboxed = set((await conn.scalars(select(TaskOutbox.history_id))).all())
    assert outboxed == changes
    received = Counter(r.event["id"] for r in await read_topic(bootstrap, settings.topics.task_events))
    assert set(received) == {event_id(h) for h in changes}
    print(f"{len(changes)} task changes; {sum(received.values()) - len(received)} re-published after kills")


async def test_sigterm_finishes_the_batch_commits_what_is_done_and_leaves_the_group(
    settings: Settings, database_url: str, db: AsyncEngine, tmp_path: Path
) -> None:
    await _create_topics(settings)
    bootstrap = settings.kafka_bootstrap_servers or ""
    # A consumer that did not leave the group holds its partitions until its session times out.
    env = consumer_env(
        settings, database_url=database_url, extra={"CARECOORD_CONSUMER_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS)}
    )
    process = ConsumerProcess(env, tmp_path / "consume.log")
    messages = discharges(4000, "ST")
    try:
        process.start()
        stream = asyncio.create_task(publish(bootstrap, _topics(settings), messages, pause_s=0.2))
        applied = select(func.count()).select_from(InboundEvent)

        async def some_applied() -> bool:
            return await count(db, applied) >= 500

        assert await eventually(some_applied, timeout_s=120, interval_s=0.05)
        started = time.monotonic()
        assert process.terminate(timeout_s=45) == 0
        shutdown_s = time.monotonic() - started
        await stream
    finally:
        process.ensure_stopped()

    committed = await committed_offsets(bootstrap, settings.consumer_group, [settings.topics.adt])
    async with db.connect() as conn:
        rows = (await conn.execute(select(InboundEvent.partition, InboundEvent.offset))).all()
    done: dict[int, set[int]] = {}
    for partition, offset in rows:
        done.setdefault(partition, set()).add(offset)
    assert 0 < sum(len(v) for v in done.values()) < len(messages), "stopped mid-stream"
    for tp, next_offset in committed.items():
        # Committed exactly what is applied: nothing applied left uncommitted, nothing committed unapplied.
        assert done.get(tp.partition, set()) == set(range(next_offset)), f"partition {tp.partition}"
    assert sum(len(v) for v in done.values()) == sum(committed.values())

    # It left the group: a newcomer's join is an ordinary one (the broker holds a join for about half the
    # session timeout), not one that waits for the departed member's session to expire (over 1.5 x).
    newcomer = AIOKafkaConsumer(
        settings.topics.adt,
        bootstrap_servers=bootstrap,
        group_id=settings.consumer_group,
        enable_auto_commit=False,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=500,
    )
    started = time.monotonic()
    await newcomer.start()
    try:
        while not newcomer.assignment() and time.monotonic() - started < 60:
            await newcomer.getmany(timeout_ms=200)
        joined_s = time.monotonic() - started
    finally:
        await newcomer.stop()
    assert joined_s < SESSION_TIMEOUT_MS / 1000, (
        f"newcomer waited {joined_s:.1f}s: the stopped consumer did not leave the group"
    )
    print(f"shutdown took {shutdown_s:.1f}s; newcomer joined in {joined_s:.1f}s")
