"""What the reliability tests share: a `carecoord consume` process to kill, the stream publisher,
group progress read from the broker, and a run's outcome in natural keys (no generated ids)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.settings import Settings
from tests.hl7_builder import adt
from tests.reliability.event_mix import Message

REPO_ROOT = Path(__file__).resolve().parents[2]


def consumer_env(settings: Settings, *, database_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a `carecoord consume` process configured like `settings`."""
    t = settings.topics
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARECOORD_")}
    env.update(
        {
            "CARECOORD_ENVIRONMENT": "development",
            "CARECOORD_VAR_DIR": str(settings.var_dir),
            "CARECOORD_DATABASE_URL": database_url,
            "CARECOORD_AUTO_MIGRATE": "false",
            "CARECOORD_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "",
            "CARECOORD_KAFKA_PARTITIONS": str(settings.kafka_partitions),
            "CARECOORD_TOPICS__ADT": t.adt,
            "CARECOORD_TOPICS__ADT_DEAD_LETTER": t.adt_dead_letter,
            "CARECOORD_TOPICS__ENS": t.ens,
            "CARECOORD_TOPICS__ENS_DEAD_LETTER": t.ens_dead_letter,
            "CARECOORD_TOPICS__FHIR": t.fhir,
            "CARECOORD_TOPICS__FHIR_DEAD_LETTER": t.fhir_dead_letter,
            "CARECOORD_TOPICS__TASK_EVENTS": t.task_events,
            "CARECOORD_CONSUMER_GROUP": settings.consumer_group,
            "CARECOORD_CONSUMER_SESSION_TIMEOUT_MS": "3000",
            "CARECOORD_CONSUMER_HEARTBEAT_INTERVAL_MS": "500",
            "CARECOORD_CONSUMER_POLL_TIMEOUT_MS": "100",
            "CARECOORD_CONSUMER_DB_RETRY_INITIAL_S": "0.1",
            "CARECOORD_CONSUMER_DB_RETRY_MAX_S": "2",
            "CARECOORD_JWT_SECRET": (settings.jwt_secret.get_secret_value() if settings.jwt_secret else "x" * 48),
            "CARECOORD_FACILITY_TIMEZONE": settings.facility_timezone,
            "CARECOORD_REQUIRE_ATTRIBUTION": "false",
            "CARECOORD_RULES_FILE": str(settings.rules_file),
            "CARECOORD_ESCALATION_INTERVAL_S": "0",  # escalation reads the clock: runs must not differ by it
            "CARECOORD_LOG_LEVEL": "WARNING",
        }
    )
    env.update(extra or {})
    return env


class ConsumerProcess:
    """`carecoord consume` as production runs it, in its own process, so it can be killed for real."""

    def __init__(self, env: dict[str, str], log_file: Path) -> None:
        self._env = env
        self._log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self._log_file, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from app.cli import main; main()", "consume"],
                env=self._env,
                cwd=self._log_file.parent,  # no stray .env
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout_s: float = 60) -> int:
        """SIGTERM and wait; the exit code (0 on a clean shutdown)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def ensure_stopped(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def discharges(n: int, prefix: str) -> list[Message]:
    """`n` inpatient discharges of distinct patients and visits, each keyed by its patient."""
    return [
        Message(
            "adt",
            f"{prefix}{i}".encode(),
            adt(control_id=f"{prefix}{i}", mrn=f"{prefix}{i}", visit_number=f"V{prefix}{i}").encode(),
        )
        for i in range(n)
    ]


async def count(engine: AsyncEngine, query: Any) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(query) or 0)


async def publish(bootstrap: str, topics: dict[str, str], messages: Sequence[Message], pause_s: float = 0) -> None:
    """Publish in chunks (acked per chunk), pausing between them so the stream runs while consumers die."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=8 * 1024 * 1024)
    await producer.start()
    try:
        for i in range(0, len(messages), 1000):
            sent = [await producer.send(topics[m.feed], m.value, key=m.key) for m in messages[i : i + 1000]]
            await asyncio.gather(*sent)
            if pause_s:
                await asyncio.sleep(pause_s)
    finally:
        await producer.stop()


async def end_offsets(bootstrap: str, topics: Sequence[str]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or set())]
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def committed_offsets(bootstrap: str, group: str, topics: Sequence[str]) -> dict[TopicPartition, int]:
    """The group's committed offsets, read without joining it (the consumer subscribes to nothing)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or set())]
        return {tp: offset for tp in partitions if (offset := await consumer.committed(tp)) is not None}
    finally:
        await consumer.stop()


async def wait_caught_up(bootstrap: str, groups: dict[str, str], timeout_s: float) -> None:
    """Until each group (group -> its topic) has committed every partition to its end."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = True
        for group, topic in groups.items():
            ends = await end_offsets(bootstrap, [topic])
            committed = await committed_offsets(bootstrap, group, [topic])
            if any(committed.get(tp, 0) < end for tp, end in ends.items()):
                done = False
                break
        if done:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"consumer groups did not catch up within {timeout_s}s")


OUTCOME_QUERIES = {
    "encounters": """
        SELECT (SELECT min(value) FROM patient_identifiers i WHERE i.patient_id = e.patient_id) AS mrn,
               facility, visit_number, status, class_code, patient_class, hospital_service, location,
               discharge_disposition, admit_at, discharge_at, behavioral_health, part2, last_event_at
        FROM encounters e""",
    "tasks": """
        SELECT (SELECT min(value) FROM patient_identifiers i WHERE i.patient_id = t.patient_id) AS mrn,
               (SELECT visit_number FROM encounters e WHERE e.id = t.encounter_id) AS visit,
               type, status, priority, role, team, due_at, rule_id, rule_version, business_status, owner,
               (SELECT count(*) FROM task_history h WHERE h.task_id = t.id) AS changes
        FROM tasks t""",
    "inbound": "SELECT idempotency_key, source, message_type, status FROM inbound_events",
    "rejected": 'SELECT topic, "partition", "offset", reason FROM rejected_events',
    "patients": "SELECT value, system FROM patient_identifiers",
}


async def outcome(engine: AsyncEngine) -> dict[str, Counter[tuple[Any, ...]]]:
    """A run's result as multisets of natural keys: equal outcomes, nothing lost, nothing doubled."""
    async with engine.connect() as conn:
        return {
            name: Counter(tuple(row) for row in (await conn.execute(text(sql))).all())
            for name, sql in OUTCOME_QUERIES.items()
        }
