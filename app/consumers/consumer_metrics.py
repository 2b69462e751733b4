"""What a consumer reports to Prometheus: each handled record by outcome, publish-to-applied latency,
and lag per assigned partition. Kept apart from the loop so the loop reads as the delivery contract."""

from __future__ import annotations

import logging
import time
from functools import cache
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition

from app.consumers.notice_handler import HandleResult, Outcome
from app.metrics import (
    CONSUMER_LAG,
    EVENT_LATENCY,
    EVENTS_APPLIED,
    EVENTS_CONSUMED,
    EVENTS_DUPLICATE,
    EVENTS_NOT_ACTED_ON,
    EVENTS_REJECTED,
    type_label,
)

log = logging.getLogger(__name__)

CREATE_TIME = 0  # Kafka timestamp type: set by the producer when it published the record
_BY_OUTCOME = {
    Outcome.APPLIED: EVENTS_APPLIED,
    Outcome.NOT_ACTED_ON: EVENTS_NOT_ACTED_ON,
    Outcome.DUPLICATE: EVENTS_DUPLICATE,
    Outcome.REJECTED: EVENTS_REJECTED,
}


def observe(record: ConsumerRecord, result: HandleResult) -> None:
    """Called once the record's outcome is durable (its transaction committed). Label children are
    cached: this runs for every record, and resolving labels costs more than the increments."""
    consumed, outcome = _children(record.topic, type_label(result.message_type), result.outcome)
    consumed.inc()
    outcome.inc()
    if result.outcome is Outcome.APPLIED and record.timestamp_type == CREATE_TIME and record.timestamp > 0:
        _latency(record.topic).observe(max(0.0, time.time() - record.timestamp / 1000))  # broker-stamped: OS clock


@cache
def _children(topic: str, kind: str, outcome: Outcome) -> tuple[Any, Any]:
    return EVENTS_CONSUMED.labels(topic, kind), _BY_OUTCOME[outcome].labels(topic, kind)


@cache
def _latency(topic: str) -> Any:
    return EVENT_LATENCY.labels(topic)


class LagTracker:
    """Lag of the partitions this process owns; series of partitions moved away are removed, so a
    rebalance does not leave a frozen value behind for another process's partition."""

    def __init__(self, consumer: AIOKafkaConsumer, interval_s: float = 1.0) -> None:
        self._consumer = consumer
        self._interval_s = interval_s
        self._reported: set[TopicPartition] = set()
        self._next = 0.0

    async def update(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self._interval_s
        assigned = set(self._consumer.assignment())
        for tp in self._reported - assigned:
            CONSUMER_LAG.remove(tp.topic, str(tp.partition))
        for tp in assigned:
            highwater = self._consumer.highwater(tp)
            if highwater is None:
                continue
            position = await self._consumer.position(tp)
            CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, highwater - position))
        self._reported = assigned

    def clear(self) -> None:
        for tp in self._reported:
            CONSUMER_LAG.remove(tp.topic, str(tp.partition))
        self._reported = set()


class AssignmentLog(ConsumerRebalanceListener):  # type: ignore[misc]
    """Logs which partitions this process gained and lost: the first thing to read when lag grows on
    some partitions only, and how the scale-out test sees a dead consumer's partitions move on."""

    def __init__(self, group: str) -> None:
        self._group = group

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if revoked:
            log.info("partitions revoked", extra=self._describe(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions assigned", extra=self._describe(assigned))

    def _describe(self, partitions: set[TopicPartition]) -> dict[str, object]:
        topics = sorted({tp.topic for tp in partitions})
        return {"group": self._group, "topics": topics, "partitions": sorted(tp.partition for tp in partitions)}
