"""Scale-out: three `carecoord consume` processes (real OS processes, production settings) share one
consumer group on a 6-partition ADT topic of the real broker; one is killed (SIGKILL, no goodbye) while
the backlog is being applied. Every event must be applied exactly once, each patient's events in the
order they were sent, and the dead consumer's partitions must move to the survivors.

Size: CARECOORD_SCALEOUT_EVENTS (default 10,000) events for CARECOORD_SCALEOUT_PATIENTS (default 500)
patients. PostgreSQL only: three processes writing one SQLite file serialize on its single writer lock,
which proves nothing about scale-out and is not a deployment carecoord supports (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import InboundEvent, RejectedEvent, Task
from app.messaging.embedded_broker import EmbeddedBroker
from app.messaging.kafka_clients import KafkaConnection
from app.messaging.keys import patient_partition_key
from app.messaging.topics import ensure_topics, topic_specs
from app.settings import Settings
from tests.conftest import TEST_JWT_SECRET
from tests.hl7_builder import adt
from tests.integration.test_cli import CARECOORD, clean_env

EVENTS = int(os.environ.get("CARECOORD_SCALEOUT_EVENTS", "10000"))
PATIENTS = int(os.environ.get("CARECOORD_SCALEOUT_PATIENTS", "500"))
CONSUMERS = 3
PARTITIONS = 6
STAY = ("A01", "A08", "A08", "A03")  # admit, two updates, discharge: one inpatient stay
FACILITY = "GOODHEALTH"
DEADLINE_S = 150

pytestmark = pytest.mark.postgresql(
    reason="concurrent writer processes on one SQLite file serialize on its single write lock (not a "
    "supported deployment)"
)


@dataclass(frozen=True)
class Sent:
    control_id: str
    patient: int
    seq: int  # the patient's n-th event, in sending order
    payload: bytes
    key: bytes


def corpus(events: int, patients: int) -> list[Sent]:
    """Each patient's events, interleaved across patients as a hospital feed would send them."""
    per_patient = events // patients
    messages = []
    for seq in range(per_patient):
        stay, step = divmod(seq, len(STAY))
        trigger = STAY[step]
        for p in range(patients):
            mrn = f"SO{p:05d}"
            day = 1 + stay * 5
            control_id = f"SO-{p:05d}-{seq:03d}"
            payload = adt(
                trigger,
                control_id=control_id,
                mrn=mrn,
                facility=FACILITY,
                authority=FACILITY,
                visit_number=f"V{p:05d}{stay:02d}",
                admit_time=f"202610{day:02d}080000-0500",
                event_time=f"202610{day + step:02d}090000-0500",
                message_time=f"202610{day + step:02d}090500-0500",
                discharge_time=f"202610{day + 3:02d}120000-0500" if trigger == "A03" else None,
            )
            messages.append(Sent(control_id, p, seq, payload.encode(), patient_partition_key(FACILITY, mrn)))
    return messages


async def produce_all(settings: Settings, messages: list[Sent]) -> None:
    producer = KafkaConnection.from_settings(settings).producer(acks="all", linger_ms=5)
    await producer.start()
    try:
        pending = []
        for m in messages:
            pending.append(await producer.send(settings.topics.adt, m.payload, key=m.key))
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def consumer_env(settings: Settings, var_dir: Path) -> dict[str, str]:
    """A production configuration, as a Deployment would pass it: nothing embedded, topics pre-created."""
    return clean_env(
        CARECOORD_ENVIRONMENT="production",
        CARECOORD_VAR_DIR=str(var_dir),
        CARECOORD_DATABASE_URL=settings.effective_database_url,
        CARECOORD_AUTO_MIGRATE="false",
        CARECOORD_KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers or "",
        CARECOORD_TOPICS__ADT=settings.topics.adt,
        CARECOORD_TOPICS__ADT_DEAD_LETTER=settings.topics.adt_dead_letter,
        CARECOORD_TOPICS__FHIR=settings.topics.fhir,
        CARECOORD_TOPICS__FHIR_DEAD_LETTER=settings.topics.fhir_dead_letter,
        CARECOORD_CONSUMER_GROUP=settings.consumer_group,
        # A short session: the killed member is noticed within seconds; all members join one rebalance.
        CARECOORD_CONSUMER_SESSION_TIMEOUT_MS="6000",
        CARECOORD_CONSUMER_HEARTBEAT_INTERVAL_MS="1000",
        CARECOORD_ESCALATION_INTERVAL_S="0",
        CARECOORD_JWT_SECRET=TEST_JWT_SECRET,
        CARECOORD_LOG_LEVEL="INFO",
    )


def start_consumer(env: dict[str, str], cwd: Path, log_file: Path) -> subprocess.Popen[bytes]:
    with open(log_file, "wb") as err:
        return subprocess.Popen([CARECOORD, "consume"], env=env, cwd=cwd, stderr=err, stdout=subprocess.DEVNULL)


def assignments(log_file: Path, topic: str) -> list[list[int]]:
    """The ADT partitions a consumer process was given, in order, from its JSON log."""
    found = []
    for line in log_file.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("msg") == "partitions assigned" and entry.get("topics") in ([topic], []):
            found.append(entry["partitions"])
    return found


async def applied_count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(InboundEvent)) or 0)


async def test_three_consumers_apply_every_event_once_in_patient_order_through_a_crash(
    broker: EmbeddedBroker, settings: Settings, db: AsyncEngine, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"kafka_partitions": PARTITIONS})
    topic = settings.topics.adt
    await ensure_topics(KafkaConnection.from_settings(settings), topic_specs(settings), 1)
    messages = corpus(EVENTS, PATIENTS)
    await produce_all(settings, messages)

    env = consumer_env(settings, tmp_path)
    logs = [tmp_path / f"consumer-{i}.log" for i in range(CONSUMERS)]
    procs = [start_consumer(env, tmp_path, log_file) for log_file in logs]
    started = time.monotonic()
    try:
        # Kill one once all three share the work and a good part of the backlog remains.
        while time.monotonic() - started < DEADLINE_S:
            shared = all(assignments(f, topic) for f in logs)
            done = await applied_count(db)
            if shared and done >= len(messages) // 5:
                break
            assert all(p.poll() is None for p in procs), "a consumer exited on its own"
            await asyncio.sleep(0.05)
        victim = procs[0]
        victim_partitions = assignments(logs[0], topic)[-1]
        applied_at_kill = await applied_count(db)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        assert applied_at_kill < len(messages), "the backlog was gone before the kill: nothing was proven"
        assert victim_partitions, "the killed consumer owned no partition"

        while time.monotonic() - started < DEADLINE_S and await applied_count(db) < len(messages):
            assert all(p.poll() is None for p in procs[1:]), "a surviving consumer exited"
            await asyncio.sleep(0.2)
    finally:
        for proc in procs[1:]:
            proc.send_signal(signal.SIGTERM)
        for proc in procs[1:]:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # Nothing lost, nothing doubled.
    async with db.connect() as conn:
        rows = (
            await conn.execute(
                select(
                    InboundEvent.message_identity,
                    InboundEvent.partition,
                    InboundEvent.offset,
                    InboundEvent.applied_at,
                    InboundEvent.status,
                ).where(InboundEvent.topic == topic)
            )
        ).all()
        rejected = await conn.scalar(select(func.count()).select_from(RejectedEvent))
        task_rows = (await conn.execute(select(Task.patient_id, Task.encounter_id, Task.type))).all()
    assert rejected == 0
    by_control = {key.removeprefix(f"hl7v2|{FACILITY}|"): (p, o, at, status) for key, p, o, at, status in rows}
    assert len(rows) == len(messages), f"{len(rows)} applied rows for {len(messages)} events"
    assert set(by_control) == {m.control_id for m in messages}, "an event is missing or unknown"
    assert {status for *_, status in by_control.values()} == {"applied"}
    assert len(task_rows) == len(set(task_rows)), "a task was raised twice for one encounter"
    assert len(task_rows) >= PATIENTS, "every patient was discharged at least once"

    # Per-patient order: one partition per patient, offsets in sending order, and never an event
    # applied before an earlier one of the same patient (equal times: one batch transaction, which
    # applies in offset order).
    per_patient: dict[int, list[Sent]] = defaultdict(list)
    for m in messages:
        per_patient[m.patient].append(m)
    for patient, sent in per_patient.items():
        seen = [by_control[m.control_id] for m in sorted(sent, key=lambda m: m.seq)]
        assert len({partition for partition, *_ in seen}) == 1, f"patient {patient} spans partitions"
        offsets = [offset for _, offset, _, _ in seen]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets), f"patient {patient}: send order"
        times = [applied_at for _, _, applied_at, _ in seen]
        assert times == sorted(times), f"patient {patient}: applied out of order"

    # The dead consumer's partitions were taken over by the survivors.
    taken_over = {p for log_file in logs[1:] for p in assignments(log_file, topic)[-1]}
    assert set(victim_partitions) <= taken_over, (victim_partitions, taken_over)
    assert taken_over == set(range(PARTITIONS))
    print(
        f"killed consumer 0 at {applied_at_kill}/{len(messages)} applied (it owned partitions {victim_partitions}); "
        f"all applied in {time.monotonic() - started:.1f}s"
    )
