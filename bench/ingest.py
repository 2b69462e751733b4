"""End-to-end ingest benchmark: realistic ADT through the real broker into the database.

Three measurements on the same generated corpus:
  1. throughput  - N messages pre-loaded on the ADT topic, then drained by carecoord's consumer into
                   the database (patients, encounter state, tasks, ledger): messages/s end to end;
  2. latency     - messages produced at a fixed rate while the consumer runs; publish -> task-created
                   latency for every discharge that raises a task (p50/p95/p99/max);
  3. raw         - a bare aiokafka consume loop over the same topic: the ceiling the broker allows.

Usage (documented in docs/benchmarks.md):
  .venv/bin/python bench/ingest.py --messages 20000 \
      --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/carecoord_bench
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.db.migrate import recreate_schema
from app.db.models import InboundEvent, Task
from app.db.session import create_engine
from app.messaging.embedded_broker import EmbeddedBroker
from app.messaging.kafka_clients import KafkaConnection
from app.messaging.keys import patient_partition_key
from app.runtime import Runtime
from app.settings import Settings, Topics

console = Console(stderr=True)

FILLER_OBX = "OBX|{n}|TX|11506-3^Progress note^LN||{text}||||||F"
NOTE = "Patient tolerating diet, ambulating with assistance, pain controlled on oral medication. " * 2


@dataclass(frozen=True)
class Message:
    key: bytes
    payload: bytes
    control_id: str
    raises_task: bool  # raises a post-discharge contact (the shipped rules raise more: med rec, in-reach)


def segment(name: str, fields: dict[int, str]) -> str:
    values = [""] * max(fields)
    for pos, val in fields.items():
        values[pos - 1] = val
    return "|".join([name, *values])


def hl7_ts(moment: datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S") + "-0500"


def corpus(n: int, seed: int = 7) -> list[Message]:
    """Per patient: A01, A02, A08, A03 (inpatient); some ED visits (A04, A03) raise no task."""
    rng = random.Random(seed)
    messages: list[Message] = []
    base = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
    patient = 0
    while len(messages) < n:
        patient += 1
        mrn = f"MRN{patient:08d}"
        visit = f"V{patient:09d}"
        start = base + timedelta(minutes=rng.randint(0, 40_000))
        inpatient = rng.random() < 0.8
        # Demographics are the patient's, the same on every message about them.
        dob = f"19{rng.randint(40, 99)}0{rng.randint(1, 9)}1{rng.randint(0, 9)}"
        sex, ssn, street = rng.choice("MF"), rng.randint(100000000, 999999999), rng.randint(1, 999)
        events = ["A01", "A02", "A08", "A03"] if inpatient else ["A04", "A03"]
        for i, trigger in enumerate(events):
            if len(messages) >= n:
                break
            at = start + timedelta(hours=24 * i + rng.randint(0, 5))
            control = f"{trigger}-{patient}-{i}"
            segments = [
                "MSH|^~\\&|EPIC|GOODHEALTH|CARECOORD|ACO|"
                + hl7_ts(at)
                + f"||ADT^{trigger}^ADT_{trigger}|{control}|P|2.5.1",
                f"EVN|{trigger}|{hl7_ts(at)}",
                segment(
                    "PID",
                    {
                        1: "1",
                        3: f"{mrn}^^^GOODHEALTH^MR~{ssn}^^^SSA^SS",
                        5: f"PATIENT{patient}^ALEX^Q^^^^L",
                        7: dob,
                        8: sex,
                        11: f"{street} MAIN ST^^SPRINGFIELD^MA^01101^USA^H",
                        13: f"^PRN^PH^^1^413^555{rng.randint(1000, 9999)}",
                        16: "S",
                        18: f"ACCT{patient}",
                        30: "N",
                    },
                ),
                "PD1|||GOODHEALTH CLINIC^^1234|1234567890^WELBY^MARCUS^^^DR^MD",
                f"NK1|1|PATIENT{patient}^SAM|SPO^Spouse|{rng.randint(1, 999)} MAIN ST^^SPRINGFIELD^MA^01101^USA",
                segment(
                    "PV1",
                    {
                        1: "1",
                        2: "I" if inpatient else "E",
                        3: f"4W^{400 + i}^A^GOODHEALTH",
                        7: "1234567890^WELBY^MARCUS",
                        10: "MED" if inpatient else "EMR",
                        19: f"{visit}^^^GOODHEALTH^VN",
                        36: "01" if trigger == "A03" else "",
                        44: hl7_ts(start),
                        45: hl7_ts(at) if trigger == "A03" else "",
                    },
                ),
                "PV2|||^Shortness of breath",
                f"DG1|1||I50.9^Heart failure, unspecified^I10||{hl7_ts(start)}|A",
                f"DG1|2||E11.9^Type 2 diabetes mellitus without complications^I10||{hl7_ts(start)}|A",
                segment("IN1", {1: "1", 2: "MCD^Medicaid", 3: "MASSHEALTH", 4: "MassHealth", 36: f"MH{patient:09d}"}),
            ]
            target = rng.randint(2048, 4096)
            k = 1
            while sum(len(s) + 1 for s in segments) < target:
                segments.append(FILLER_OBX.format(n=k, text=NOTE))
                k += 1
            payload = "\r".join(segments) + "\r"
            messages.append(
                Message(
                    key=patient_partition_key("urn:hl7v2:aa:GOODHEALTH", mrn),
                    payload=payload.encode()[:4096],
                    control_id=control,
                    raises_task=trigger == "A03" and inpatient,
                )
            )
    return messages


async def produce(bootstrap: str, topic: str, messages: list[Message], rate: float | None = None) -> dict[str, float]:
    """Returns the send instant (epoch s) per control id. rate=None sends as fast as acks allow."""
    producer = KafkaConnection(bootstrap).producer(linger_ms=5, acks="all")
    await producer.start()
    sent: dict[str, float] = {}
    try:
        started = time.perf_counter()
        pending = []
        for i, m in enumerate(messages):
            if rate:
                delay = started + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            sent[m.control_id] = time.time()
            pending.append(await producer.send(topic, m.payload, key=m.key))
            if len(pending) >= 500:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def count_contacts(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        query = select(func.count()).select_from(Task).where(Task.type == "post-discharge-contact")
        return int(await conn.scalar(query) or 0)


async def count(engine: AsyncEngine, model: type) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(model)) or 0)


async def wait_applied(
    engine: AsyncEngine, n: int, progress: Progress | None = None, timeout: float = 1800
) -> tuple[float, float]:
    """(seconds from the call until all n are applied, seconds from the first applied event to the last).
    The second excludes consumer start-up (group join), i.e. the sustained rate."""
    started = time.perf_counter()
    first: float | None = None
    task = progress.add_task("applying", total=n) if progress else None
    while True:
        done = await count(engine, InboundEvent)
        if done and first is None:
            first = time.perf_counter()
        if progress and task is not None:
            progress.update(task, completed=done)
        if done >= n:
            now = time.perf_counter()
            return now - started, now - (first or started)
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"only {done}/{n} applied")
        await asyncio.sleep(0.05)


def settings_for(args: argparse.Namespace, bootstrap: str, suffix: str, var_dir: Path) -> Settings:
    return Settings(
        var_dir=var_dir,
        database_url=args.database_url,
        auto_migrate=False,
        kafka_bootstrap_servers=bootstrap,
        kafka_partitions=args.partitions,
        topics=Topics(adt=f"bench-adt-{suffix}", adt_dead_letter=f"bench-adt-dlq-{suffix}"),
        consumer_group=f"bench-{suffix}",
        consumer_session_timeout_ms=2000,
        consumer_heartbeat_interval_ms=500,
        consumer_max_batch=args.batch,
        jwt_secret="bench-" + "x" * 40,
        # The shipped rules; every generated patient counts as attributed (no roster in this benchmark).
        require_attribution=False,
    )


async def throughput(args: argparse.Namespace, bootstrap: str, engine: AsyncEngine, messages: list[Message]) -> dict:
    await recreate_schema(engine)
    s = settings_for(args, bootstrap, uuid.uuid4().hex[:6], Path(args.var_dir))
    async with Runtime(s, run_consumers=False):
        pass  # creates the topics
    t0 = time.perf_counter()
    await produce(bootstrap, s.topics.adt, messages)
    produce_s = time.perf_counter() - t0
    console.print(f"produced {len(messages)} in {produce_s:.1f}s ({len(messages) / produce_s:,.0f}/s)")
    cpu_before = _cpu_seconds()
    with Progress(console=console) as progress:
        if args.consumers == 1:
            async with Runtime(s):
                total, elapsed = await wait_applied(engine, len(messages), progress)
        else:
            async with consumer_processes(s, args.consumers):
                total, elapsed = await wait_applied(engine, len(messages), progress)
    cpu = _cpu_seconds() - cpu_before
    tasks = await count(engine, Task)
    contacts = await count_contacts(engine)
    expected = sum(m.raises_task for m in messages)
    assert contacts == expected, f"{contacts} post-discharge contacts, expected {expected}"
    return {
        "messages": len(messages),
        "seconds": round(elapsed, 2),
        "per_second": round(len(messages) / elapsed),
        "seconds_including_startup": round(total, 2),
        # The consumer process's own CPU per message (user + system): what one core can sustain,
        # independent of what else the machine is running.
        "consumer_cpu_us_per_message": round(cpu / len(messages) * 1e6) if args.consumers == 1 else None,
        "consumers": args.consumers,
        "tasks": tasks,
        "post_discharge_contacts": contacts,
        "produce_per_second": round(len(messages) / produce_s),
        "topic": s.topics.adt,
    }


@asynccontextmanager
async def consumer_processes(s: Settings, n: int) -> AsyncIterator[None]:
    """`carecoord consume` x n, one consumer group: the scale-out a deployment uses (up to the
    partition count). Started together so they join the group in one rebalance."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARECOORD_")} | {
        "CARECOORD_VAR_DIR": str(s.var_dir),
        "CARECOORD_DATABASE_URL": s.effective_database_url,
        "CARECOORD_AUTO_MIGRATE": "false",
        "CARECOORD_KAFKA_BOOTSTRAP_SERVERS": s.kafka_bootstrap_servers or "",
        "CARECOORD_TOPICS__ADT": s.topics.adt,
        "CARECOORD_TOPICS__ADT_DEAD_LETTER": s.topics.adt_dead_letter,
        "CARECOORD_CONSUMER_GROUP": s.consumer_group,
        "CARECOORD_CONSUMER_SESSION_TIMEOUT_MS": "6000",  # a 3 s join window: all n join one rebalance
        "CARECOORD_CONSUMER_HEARTBEAT_INTERVAL_MS": "1000",
        "CARECOORD_CONSUMER_MAX_BATCH": str(s.consumer_max_batch),
        "CARECOORD_REQUIRE_ATTRIBUTION": "false",
        "CARECOORD_ESCALATION_INTERVAL_S": "0",
        "CARECOORD_LOG_LEVEL": "WARNING",
        "CARECOORD_JWT_SECRET": s.jwt_secret.get_secret_value() if s.jwt_secret else "",
    }
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", "from app.cli import main; main()", "consume", env=env
        )
        for _ in range(n)
    ]
    try:
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            await proc.wait()


async def raw(bootstrap: str, topic: str, n: int) -> dict:
    consumer = KafkaConnection(bootstrap).consumer(
        topic,
        group_id=f"raw-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=2000,
        heartbeat_interval_ms=500,
    )
    await consumer.start()
    try:
        seen = 0
        started = None
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=500)
            if started is None and batch:
                started = time.perf_counter()
            seen += sum(len(r) for r in batch.values())
        elapsed = time.perf_counter() - (started or time.perf_counter())
    finally:
        await consumer.stop()
    return {"messages": n, "seconds": round(elapsed, 2), "per_second": round(n / elapsed)}


LATENCY_SEED = 11


async def produce_in_subprocess(bootstrap: str, topic: str, n: int, rate: float, seed: int) -> dict[str, float]:
    """The hospital's sender is another process; sharing this event loop with the CPU-bound consumer
    would delay sends after their timestamps were taken and overstate latency."""
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--produce-only",
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--latency-messages",
        str(n),
        "--rate",
        str(rate),
        "--seed",
        str(seed),
        "--out",
        str(out),
    )
    if await proc.wait() != 0:
        raise RuntimeError("producer process failed")
    sent = json.loads(out.read_text())
    out.unlink()
    return sent


async def latency(args: argparse.Namespace, bootstrap: str, engine: AsyncEngine, messages: list[Message]) -> dict:
    await recreate_schema(engine)
    s = settings_for(args, bootstrap, uuid.uuid4().hex[:6], Path(args.var_dir))
    async with Runtime(s) as rt:
        while not all(c._consumer.assignment() for c in rt.consumers):
            await asyncio.sleep(0.05)
        console.print(f"producing {len(messages)} at {args.rate}/s from a separate process")
        sent = await produce_in_subprocess(bootstrap, s.topics.adt, len(messages), args.rate, LATENCY_SEED)
        await wait_applied(engine, len(messages))
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(InboundEvent.idempotency_key, Task.created_at)
                .join(Task, Task.encounter_id == InboundEvent.encounter_id)
                .where(InboundEvent.message_type == "ADT^A03", Task.type == "post-discharge-contact")
            )
        ).all()
    lat = sorted((created.timestamp() - sent[key.rsplit("|", 1)[1]]) * 1000 for key, created in rows)
    q = statistics.quantiles(lat, n=100)
    return {
        "rate": args.rate,
        "messages": len(messages),
        "tasks": len(lat),
        "p50_ms": round(q[49], 1),
        "p95_ms": round(q[94], 1),
        "p99_ms": round(q[98], 1),
        "max_ms": round(lat[-1], 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--latency-messages", type=int, default=10000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument(
        "--consumers",
        type=int,
        default=1,
        help="1: in this process (CPU measured); n > 1: n `carecoord consume` processes",
    )
    parser.add_argument("--database-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/carecoord_bench")
    parser.add_argument("--var-dir", default="var/bench")
    parser.add_argument("--skip", choices=["latency", "throughput", "raw"], action="append", default=[])
    parser.add_argument("--json", type=Path, help="write results here too")
    # Internal: the latency phase's producer process.
    parser.add_argument("--produce-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=LATENCY_SEED, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.produce_only:
        sent = await produce(args.bootstrap, args.topic, corpus(args.latency_messages, seed=args.seed), args.rate)
        args.out.write_text(json.dumps(sent))
        return

    messages = corpus(args.messages)
    sizes = [len(m.payload) for m in messages]
    console.print(
        f"corpus: {len(messages)} messages, {min(sizes)}-{max(sizes)} bytes, "
        f"{len({m.key for m in messages})} patients, {sum(m.raises_task for m in messages)} task-raising"
    )
    broker = EmbeddedBroker(log_file=Path(args.var_dir) / "broker.log")
    await broker.start()
    engine = create_engine(args.database_url)
    results: dict = {
        "machine": {
            "cpus": __import__("os").cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "database": engine.dialect.name,
        },
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    try:
        if "throughput" not in args.skip:
            results["throughput"] = await throughput(args, broker.bootstrap_servers, engine, messages)
            console.print(results["throughput"])
            if "raw" not in args.skip:
                results["raw"] = await raw(broker.bootstrap_servers, results["throughput"]["topic"], len(messages))
                results["ratio_to_raw"] = round(results["throughput"]["per_second"] / results["raw"]["per_second"], 3)
                console.print(results["raw"])
        if "latency" not in args.skip:
            results["latency"] = await latency(
                args, broker.bootstrap_servers, engine, corpus(args.latency_messages, seed=LATENCY_SEED)
            )
            console.print(results["latency"])
    finally:
        await engine.dispose()
        await broker.stop()
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
