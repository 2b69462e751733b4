"""Kafka consumer loop: at-least-once delivery with offsets committed only after the DB commit.

Each message is applied (or dead-lettered) in its own transaction; the batch's offsets are
committed afterwards. A crash between the two re-delivers messages the handler already applied,
which the idempotency ledger turns into no-ops. A transient database failure is retried on the
same message with backoff, and the consumer reports not-ready meanwhile, so nothing is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError, MessageSizeTooLargeError
from aiokafka.protocol.group import LeaveGroupRequest
from aiokafka.structs import OffsetAndMetadata

from app.consumers.consumer_metrics import AssignmentLog, LagTracker, observe
from app.consumers.notice_handler import HandleResult, Outcome
from app.consumers.transient import is_transient
from app.messaging.kafka_clients import KafkaConnection
from app.state.inbound import Position

log = logging.getLogger(__name__)

Handler = Callable[[bytes, Position], Awaitable[HandleResult]]
BatchHandler = Callable[[list[tuple[bytes, Position]]], Awaitable[list[HandleResult] | None]]
DeadLetter = Callable[[ConsumerRecord, HandleResult], Awaitable[None]]


class ConsumerRunner:
    def __init__(
        self,
        *,
        kafka: KafkaConnection,
        topic: str,
        group_id: str,
        client_id: str,
        handler: Handler,
        dead_letter: DeadLetter,
        batch_handler: BatchHandler | None = None,
        max_batch: int,
        poll_timeout_ms: int,
        session_timeout_ms: int,
        heartbeat_interval_ms: int,
        fetch_max_wait_ms: int = 500,
        max_record_bytes: int | None = None,
        retry_initial_s: float,
        retry_max_s: float,
        shutdown_timeout_s: float = 30.0,
    ) -> None:
        self.topic = topic
        self._handler = handler
        self._batch_handler = batch_handler
        self._dead_letter = dead_letter
        self._max_batch = max_batch
        self._poll_timeout_ms = poll_timeout_ms
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._shutdown_timeout_s = shutdown_timeout_s
        self._consumer = kafka.consumer(
            group_id=group_id,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=heartbeat_interval_ms,
            fetch_max_wait_ms=fetch_max_wait_ms,
            # A record as large as the producer may send must fit one partition fetch.
            **({"max_partition_fetch_bytes": max_record_bytes} if max_record_bytes else {}),
        )
        self._consumer.subscribe([topic], listener=AssignmentLog(group_id))
        self._lag = LagTracker(self._consumer)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.healthy = False

    async def start(self) -> None:
        await self._consumer.start()
        self.healthy = True
        self._task = asyncio.create_task(self._run(), name=f"consumer:{self.topic}")

    async def stop(self) -> None:
        """Graceful: the batch in flight finishes and its offsets are committed; one that outlasts the
        shutdown timeout is cancelled, which rolls its transaction back (abandoned whole, left uncommitted
        for the next owner). Then the consumer leaves the group, so its partitions move on at once."""
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self._shutdown_timeout_s)
            except TimeoutError:
                log.warning("in-flight batch abandoned at shutdown", extra={"topic": self.topic})
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        await self._leave_group()
        await self._consumer.stop()
        self._lag.clear()
        self.healthy = False

    async def _leave_group(self) -> None:
        """Leave the group explicitly, so the partitions move to another member now, not after the session
        timeout. aiokafka leaves only from a generation above 0 (Kafka counts from 1); Tansu counts from 0,
        so its first generation is left here (tests/reliability/test_crash_recovery.py proves the newcomer's
        prompt join). Uses aiokafka internals, pinned by the dependency range."""
        coordinator = getattr(self._consumer, "_coordinator", None)
        if coordinator is None:
            return
        member, generation = coordinator.member_id, coordinator.generation
        await coordinator.close()  # stops heartbeats; sends LeaveGroup itself from generation 1 on
        if generation == 0 and member:
            try:
                await coordinator._send_req(LeaveGroupRequest(coordinator.group_id, member))
            except KafkaError as exc:
                log.warning("leaving the consumer group failed", extra={"error": type(exc).__name__})

    @property
    def ready(self) -> bool:
        """Consuming, and not stuck retrying a database outage; a loop that died is not ready."""
        return self.healthy and self._task is not None and not self._task.done()

    async def caught_up(self) -> bool:
        """True when every assigned partition has been consumed and committed to its high-water mark."""
        assignment = self._consumer.assignment()
        if not assignment:
            return False
        for tp in assignment:
            highwater = self._consumer.highwater(tp)
            committed = await self._consumer.committed(tp)
            if highwater is None or (committed or 0) < highwater:
                return False
        return True

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                batch = await self._consumer.getmany(timeout_ms=self._poll_timeout_ms, max_records=self._max_batch)
            except KafkaError:
                log.warning("poll failed; retrying", exc_info=True)
                await asyncio.sleep(self._retry_initial_s)
                continue
            await self._apply_polled(batch)
            try:
                await self._lag.update()
            except Exception:  # a metric must never stop the consumer
                log.debug("lag update failed", exc_info=True)

    async def _apply_polled(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        # One transaction for the whole poll (every partition, each in its own order) when the batch
        # path can take it; the offsets of all its partitions are committed after that commit.
        if (
            self._batch_handler is not None
            and batch
            and await self._try_batch([r for records in batch.values() for r in records])
        ):
            await self._commit_many({tp: records[-1].offset + 1 for tp, records in batch.items()})
            return
        for tp, records in batch.items():
            await self._process_partition(tp, records)
            if self._stopping.is_set():
                break

    async def _process_partition(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        """Apply records one transaction each, in order, then commit up to the last durable one.

        This is the path the batch path (an optimisation only) falls back to: if a batch fails for
        any reason, its records come here, and idempotency makes any overlap harmless."""
        last_done: int | None = None

        async def commit_progress() -> None:
            if last_done is not None:
                await self._commit(tp, last_done + 1)

        for record in records:
            if not await self._process_with_retry(record, commit_progress):
                break
            last_done = record.offset
        await commit_progress()

    async def _try_batch(self, records: list[ConsumerRecord]) -> bool:
        assert self._batch_handler is not None
        try:
            results = await self._batch_handler([(r.value or b"", position_of(r)) for r in records])
            if results is None:
                return False
            for record, result in zip(records, results, strict=True):
                if result.outcome is Outcome.REJECTED:
                    await self._publish_dead_letter(record, result)
        except Exception:  # the per-record path retries, backs off and dead-letters as needed
            log.info("batch path failed; processing records one by one", exc_info=True)
            return False
        for record, result in zip(records, results, strict=True):
            observe(record, result)
        self.healthy = True
        return True

    async def _process_with_retry(self, record: ConsumerRecord, commit_progress: Callable[[], Awaitable[None]]) -> bool:
        delay = self._retry_initial_s
        stalled = False
        position = position_of(record)
        while True:
            try:
                result = await self._handler(record.value or b"", position)
                if result.outcome is Outcome.REJECTED:
                    await self._publish_dead_letter(record, result)
                observe(record, result)
                self.healthy = True
                return True
            except Exception as exc:
                # Not even the rejected-events table would take it: the dead-letter topic still
                # keeps it, so one bad record can never stall the partition.
                permanent = not (is_transient(exc) or isinstance(exc, KafkaError))
                if permanent and await self._last_resort_dead_letter(record, exc):
                    return True
                self.healthy = False
                if not stalled:
                    stalled = True
                    await commit_progress()  # an outage may be long: record what is already durable
                log.warning(
                    "transient failure; retrying the same event",
                    extra={
                        "topic": record.topic,
                        "partition": record.partition,
                        "offset": record.offset,
                        "error": type(exc).__name__,
                        "retry_in_s": delay,
                    },
                )
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                return False  # stopping: leave this event uncommitted for the next owner
            except TimeoutError:
                delay = min(delay * 2, self._retry_max_s)

    async def _publish_dead_letter(self, record: ConsumerRecord, result: HandleResult) -> None:
        try:
            await self._dead_letter(record, result)
        except MessageSizeTooLargeError:
            # Retrying cannot shrink it; the rejected-events row already holds the exact bytes.
            log.error(
                "dead-letter topic refused the record; kept in rejected_events only",
                extra={"topic": record.topic, "partition": record.partition, "offset": record.offset},
            )

    async def _last_resort_dead_letter(self, record: ConsumerRecord, exc: Exception) -> bool:
        log.error(
            "event could not be applied or recorded; dead-lettered to topic only",
            extra={
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "error": type(exc).__name__,
            },
        )
        try:
            await self._dead_letter(
                record, HandleResult(Outcome.REJECTED, reason=f"unrecordable: {type(exc).__name__}")
            )
        except KafkaError:
            return False
        return True

    async def _commit(self, tp: TopicPartition, next_offset: int) -> None:
        await self._commit_many({tp: next_offset})

    async def _commit_many(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            await self._consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:
            # Revoked in a rebalance, or the broker is away: the next owner re-reads from the last
            # commit, and the idempotency ledger makes the re-read harmless.
            log.warning(
                "offset commit skipped",
                extra={"partitions": sorted(tp.partition for tp in offsets), "error": type(exc).__name__},
            )


def position_of(record: ConsumerRecord) -> Position:
    """Where the record sits, and when the broker took it (the record timestamp, ms since the epoch)."""
    received = (
        datetime.fromtimestamp(record.timestamp / 1000, UTC) if record.timestamp and record.timestamp > 0 else None
    )
    return Position(record.topic, record.partition, record.offset, received)
