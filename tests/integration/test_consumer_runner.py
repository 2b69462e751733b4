"""The consumer loop's guarantees, with the real broker and a handler we control."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from sqlalchemy.exc import OperationalError

from app.consumers.notice_handler import HandleResult, Outcome
from app.consumers.runner import ConsumerRunner
from app.messaging.kafka_clients import KafkaConnection
from app.messaging.topics import TopicSpec, ensure_topics
from app.settings import Settings
from app.state.inbound import Position
from tests.conftest import eventually
from tests.integration.test_adt_pipeline import produce


class ScriptedHandler:
    """Fails in the ways the script says, then succeeds; records what it applied."""

    def __init__(self) -> None:
        self.transient_failures: dict[bytes, int] = {}
        self.permanent: set[bytes] = set()
        self.applied: list[bytes] = []
        self.attempts = 0

    async def __call__(self, payload: bytes, position: Position) -> HandleResult:
        self.attempts += 1
        if self.transient_failures.get(payload, 0) > 0:
            self.transient_failures[payload] -= 1
            raise OperationalError("SELECT 1", {}, ConnectionRefusedError("database down"))
        if payload in self.permanent:
            raise ValueError("this record breaks even the rejected-events table")
        self.applied.append(payload)
        return HandleResult(Outcome.APPLIED)


@pytest.fixture
async def topics(settings: Settings) -> Settings:
    await ensure_topics(
        KafkaConnection.from_settings(settings),
        [
            TopicSpec(name, 1, 3_600_000, "test", settings.broker_message_max_bytes)
            for name in (settings.topics.adt, settings.topics.adt_dead_letter)
        ],
        1,
    )
    return settings


class DeadLetterSink:
    def __init__(self) -> None:
        self.records: list[ConsumerRecord] = []
        self.reasons: list[str] = []

    async def __call__(self, record: ConsumerRecord, result: HandleResult) -> None:
        self.records.append(record)
        self.reasons.append(result.reason or "")


def make_runner(settings: Settings, handler: ScriptedHandler, dead_letter: DeadLetterSink) -> ConsumerRunner:
    return ConsumerRunner(
        kafka=KafkaConnection.from_settings(settings),
        topic=settings.topics.adt,
        group_id=settings.consumer_group,
        client_id="test",
        handler=handler,
        dead_letter=dead_letter,
        max_batch=50,
        poll_timeout_ms=100,
        session_timeout_ms=2000,
        heartbeat_interval_ms=500,
        retry_initial_s=0.05,
        retry_max_s=0.2,
    )


async def committed(settings: Settings) -> int | None:
    probe = KafkaConnection.from_settings(settings).consumer(group_id=settings.consumer_group, enable_auto_commit=False)
    await probe.start()
    try:
        return await probe.committed(TopicPartition(settings.topics.adt, 0))
    finally:
        await probe.stop()


async def test_transient_failure_retries_same_event_without_committing_past_it(topics: Settings) -> None:
    publish = DeadLetterSink()
    handler = ScriptedHandler()
    handler.transient_failures[b"second"] = 10**9  # the database is "down" for this event
    runner = make_runner(topics, handler, publish)
    await runner.start()
    try:
        await produce(topics, b"first", b"second", b"third", key=b"k")
        await eventually(lambda: _async(handler.attempts > 5))
        assert handler.applied == [b"first"]
        assert runner.healthy is False, "readiness must report the outage"
        assert await eventually(lambda: _committed_is(topics, 1)), "commit stops before the unapplied event"

        handler.transient_failures[b"second"] = 0  # the database is back
        await eventually(lambda: _async(handler.applied == [b"first", b"second", b"third"]))
        assert runner.healthy is True
        assert await eventually(lambda: _committed_is(topics, 3))
    finally:
        await runner.stop()


async def test_stop_during_outage_leaves_the_event_for_the_next_owner(topics: Settings) -> None:
    publish = DeadLetterSink()
    handler = ScriptedHandler()
    handler.transient_failures[b"stuck"] = 10**9
    runner = make_runner(topics, handler, publish)
    await runner.start()
    await produce(topics, b"ok", b"stuck", key=b"k")
    await eventually(lambda: _async(handler.attempts > 3))
    await asyncio.wait_for(runner.stop(), 10)
    assert await committed(topics) == 1

    successor_handler = ScriptedHandler()
    successor = make_runner(topics, successor_handler, publish)
    await successor.start()
    try:
        await eventually(lambda: _async(successor_handler.applied == [b"stuck"]))
    finally:
        await successor.stop()


async def test_unrecordable_event_goes_to_dead_letter_topic_and_partition_moves_on(
    topics: Settings,
) -> None:
    publish = DeadLetterSink()
    handler = ScriptedHandler()
    handler.permanent.add(b"poison")
    runner = make_runner(topics, handler, publish)
    await runner.start()
    try:
        await produce(topics, b"poison", b"after", key=b"k")
        await eventually(lambda: _async(handler.applied == [b"after"]))
        assert [r.value for r in publish.records] == [b"poison"]
        assert publish.reasons[0].startswith("unrecordable: ValueError")
        assert await eventually(lambda: _committed_is(topics, 2))
    finally:
        await runner.stop()


async def _async(value: bool) -> bool:
    return value


async def _committed_is(settings: Settings, offset: int) -> bool:
    return await committed(settings) == offset
