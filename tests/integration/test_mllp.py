"""The MLLP listener against the real broker and database, driven by python-hl7's own MLLP clients."""

from __future__ import annotations

import asyncio
import resource
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import hl7
import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaTimeoutError
from hl7.client import MLLPClient
from hl7.mllp import open_hl7_connection
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app import metrics
from app.db.models import Task
from app.ingest.mllp import MllpServer, frame
from app.messaging.embedded_broker import free_loopback_port
from app.messaging.kafka_clients import KafkaConnection
from app.runtime import Runtime
from app.settings import Settings
from tests.conftest import TEST_JWT_SECRET, eventually
from tests.hl7_builder import adt
from tests.integration.test_cli import CARECOORD, clean_env


@pytest.fixture
async def listener(runtime: Runtime) -> AsyncIterator[MllpServer]:
    async with MllpServer(runtime, host="127.0.0.1", port=0, read_timeout_s=5) as server:
        yield server


async def task_count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(Task)) or 0)


async def records_on(settings: Settings, topic: str) -> int:
    consumer = KafkaConnection.from_settings(settings).consumer(enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        offsets = await consumer.end_offsets(partitions) if partitions else {}
        return sum(offsets.values())
    finally:
        await consumer.stop()


def send_blocking(port: int, message: str | bytes) -> hl7.Message:
    """python-hl7's blocking MLLPClient (what `mllp_send` uses); reads until the whole ACK is in."""
    with MLLPClient("127.0.0.1", port) as client:
        data = client.send_message(message)
        while not data.endswith(b"\x1c\x0d"):
            more = client.socket.recv(4096)
            assert more, "connection closed before the ACK was complete"
            data += more
    return parse_ack(data)


def parse_ack(data: bytes) -> hl7.Message:
    assert data.startswith(b"\x0b") and data.endswith(b"\x1c\x0d"), data
    return hl7.parse(data[1:-2].decode())


def msa(ack: hl7.Message) -> tuple[str, str]:
    seg = ack.segment("MSA")
    return str(seg(1)), str(seg(2))


def err(ack: hl7.Message) -> hl7.Segment:
    return ack.segment("ERR")


async def read_ack(reader: asyncio.StreamReader) -> hl7.Message:
    data = await asyncio.wait_for(reader.readuntil(b"\x1c\x0d"), 20)
    return parse_ack(data)


async def test_a03_is_acknowledged_aa_after_publishing_and_becomes_a_task(
    listener: MllpServer, runtime: Runtime, db: AsyncEngine
) -> None:
    ack = await asyncio.to_thread(send_blocking, listener.port, adt(control_id="MLLP-1"))
    assert msa(ack) == ("AA", "MLLP-1")
    msh = ack.segment("MSH")
    assert str(msh(9)) == "ACK^A03^ACK"
    assert [str(msh(i)) for i in (3, 4, 5, 6)] == ["CARECOORD", "ACO", "ADT1", "GOODHEALTH"]
    assert await records_on(runtime.settings, runtime.settings.topics.adt) == 1
    assert await eventually(lambda: task_count(db)) == 1


async def test_asyncio_client_two_messages_on_one_connection(
    listener: MllpServer, runtime: Runtime, db: AsyncEngine
) -> None:
    reader, writer = await open_hl7_connection("127.0.0.1", listener.port, encoding="utf-8")
    try:
        for i in (1, 2):
            writer.writemessage(hl7.parse(adt(control_id=f"M-{i}", visit_number=f"V{i}", mrn=f"MRN{i}")))
            await writer.drain()
            ack = await asyncio.wait_for(reader.readmessage(), 20)
            assert msa(ack) == ("AA", f"M-{i}")
    finally:
        writer.close()
        await writer.wait_closed()
    assert await eventually(lambda: _at_least(db, 2)) == 2


async def _at_least(db: AsyncEngine, n: int) -> int:
    count = await task_count(db)
    return count if count >= n else 0


async def test_garbage_gets_ar_with_err_and_nothing_is_published(listener: MllpServer, runtime: Runtime) -> None:
    ack = await asyncio.to_thread(send_blocking, listener.port, b"this is not HL7 at all")
    assert msa(ack) == ("AR", "")
    assert str(err(ack)(3)(1)(1)) == "100" and str(err(ack)(4)) == "E"
    assert str(ack.segment("MSH")(9)).startswith("ACK")

    oru = adt(control_id="ORU-1").replace("ADT^A03^ADT_A03", "ORU^R01^ORU_R01")
    ack = await asyncio.to_thread(send_blocking, listener.port, oru)
    assert msa(ack) == ("AR", "ORU-1")
    assert str(err(ack)(2)) == "MSH^1^9" and str(err(ack)(3)(1)(1)) == "200"
    assert await records_on(runtime.settings, runtime.settings.topics.adt) == 0


async def test_missing_msh10_gets_ae_naming_msh10(listener: MllpServer, runtime: Runtime) -> None:
    ack = await asyncio.to_thread(send_blocking, listener.port, adt(control_id=""))
    assert msa(ack) == ("AE", "")
    assert str(err(ack)(2)) == "MSH^1^10"
    assert str(err(ack)(3)) == "101^Required field missing^HL70357"
    assert "MSH-10" in str(err(ack)(7))

    ack = await asyncio.to_thread(send_blocking, listener.port, adt(control_id="BAD-DOB", birth_date="1970-04-12"))
    assert msa(ack) == ("AE", "BAD-DOB")
    assert str(err(ack)(2)) == "PID^1^7" and str(err(ack)(3)(1)(1)) == "102"
    assert await records_on(runtime.settings, runtime.settings.topics.adt) == 0


async def test_concurrent_connections(listener: MllpServer, db: AsyncEngine) -> None:
    n = 8
    acks = await asyncio.gather(
        *(
            asyncio.to_thread(
                send_blocking, listener.port, adt(control_id=f"C-{i}", mrn=f"MRN-C{i}", visit_number=f"VC{i}")
            )
            for i in range(n)
        )
    )
    assert sorted(msa(a) for a in acks) == sorted(("AA", f"C-{i}") for i in range(n))
    assert await eventually(lambda: _at_least(db, n)) == n


async def test_split_frames_junk_and_two_frames_in_one_write(listener: MllpServer, runtime: Runtime) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    try:
        wire = b"\r\n garbage before the start block " + frame(adt(control_id="SPLIT-1").encode())
        # Dribble it: every chunk boundary, including between 0x1C and 0x0D.
        for i in range(0, len(wire) - 2, 7):
            writer.write(wire[i : min(i + 7, len(wire) - 1)])
            await writer.drain()
            await asyncio.sleep(0.001)
        writer.write(wire[-1:])
        await writer.drain()
        assert msa(await read_ack(reader)) == ("AA", "SPLIT-1")

        writer.write(
            frame(adt(control_id="PAIR-1", mrn="P1").encode()) + frame(adt(control_id="PAIR-2", mrn="P2").encode())
        )
        await writer.drain()
        assert msa(await read_ack(reader)) == ("AA", "PAIR-1")
        assert msa(await read_ack(reader)) == ("AA", "PAIR-2")
    finally:
        writer.close()
        await writer.wait_closed()
    assert await records_on(runtime.settings, runtime.settings.topics.adt) == 3


async def test_oversize_frame_gets_ar_and_the_connection_carries_on(listener: MllpServer, runtime: Runtime) -> None:
    limit = runtime.settings.ingest_max_bytes
    big = adt(control_id="BIG-1") + "NTE|1||" + "x" * (limit + 10) + "\r"
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    try:
        writer.write(frame(big.encode()))
        await writer.drain()
        ack = await read_ack(reader)
        assert msa(ack) == ("AR", "BIG-1")
        assert str(err(ack)(3)(1)(1)) == "104"

        writer.write(frame(adt(control_id="AFTER-BIG").encode()))
        await writer.drain()
        assert msa(await read_ack(reader)) == ("AA", "AFTER-BIG")
    finally:
        writer.close()
        await writer.wait_closed()
    assert await records_on(runtime.settings, runtime.settings.topics.adt) == 1


async def test_connection_closed_mid_frame_publishes_nothing(listener: MllpServer, runtime: Runtime) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(frame(adt(control_id="HALF").encode())[:100])
    await writer.drain()
    writer.close()
    await writer.wait_closed()

    ack = await asyncio.to_thread(send_blocking, listener.port, adt(control_id="WHOLE"))
    assert msa(ack) == ("AA", "WHOLE")
    assert await records_on(runtime.settings, runtime.settings.topics.adt) == 1


async def test_stalled_frame_is_closed_after_the_read_timeout(runtime: Runtime) -> None:
    async with MllpServer(runtime, host="127.0.0.1", port=0, read_timeout_s=0.5) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"\x0bMSH|^~\\&|")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, no ACK
        writer.close()
        await writer.wait_closed()


async def test_broker_failure_is_answered_ar_never_aa(
    listener: MllpServer, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broker_down(*args: object, **kwargs: object) -> None:
        raise KafkaTimeoutError()

    assert runtime.publisher is not None
    monkeypatch.setattr(runtime.publisher, "publish", broker_down)
    ack = await asyncio.to_thread(send_blocking, listener.port, adt(control_id="RETRY-ME"))
    assert msa(ack) == ("AR", "RETRY-ME")
    assert str(err(ack)(3)(1)(1)) == "207"
    monkeypatch.undo()
    # The sender resends unchanged once the broker is back.
    ack = await asyncio.to_thread(send_blocking, listener.port, adt(control_id="RETRY-ME"))
    assert msa(ack) == ("AA", "RETRY-ME")
    assert await records_on(runtime.settings, runtime.settings.topics.adt) == 1


async def test_at_the_limit_the_longest_idle_connection_makes_room(runtime: Runtime) -> None:
    async with MllpServer(runtime, host="127.0.0.1", port=0, max_connections=2) as server:
        old_reader, old = await asyncio.open_connection("127.0.0.1", server.port)
        await asyncio.sleep(0.05)
        recent_reader, recent = await asyncio.open_connection("127.0.0.1", server.port)
        assert await eventually(lambda: _has_open(server, 2))
        ack = await asyncio.to_thread(send_blocking, server.port, adt(control_id="ROOM"))
        assert msa(ack) == ("AA", "ROOM")
        assert await asyncio.wait_for(old_reader.read(), 10) == b""  # the longest idle was closed
        recent.write(frame(adt(control_id="STILL-OPEN").encode()))  # the more recent one was kept
        await recent.drain()
        assert msa(await read_ack(recent_reader)) == ("AA", "STILL-OPEN")
        for w in (old, recent):
            w.close()
            await w.wait_closed()


async def test_when_every_connection_is_processing_a_message_a_newcomer_is_refused(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Busy connections are never evicted: the newcomer is closed and counted; the busy ones get their ACK."""
    async with MllpServer(runtime, host="127.0.0.1", port=0, max_connections=2) as server:
        release = asyncio.Event()
        answer = server._answer

        async def held(event: object, conn_id: int) -> bytes:
            await release.wait()  # the broker is slow: both connections stay busy
            return await answer(event, conn_id)

        monkeypatch.setattr(server, "_answer", held)
        refused_before = metrics.sample("carecoord_mllp_connections_closed_total", reason="refused") or 0.0
        senders = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
        for i, (_, writer) in enumerate(senders):
            writer.write(frame(adt(control_id=f"BUSY-{i}").encode()))
            await writer.drain()
        assert await eventually(lambda: _all_busy(server, 2))
        late_reader, late = await asyncio.open_connection("127.0.0.1", server.port)
        assert await asyncio.wait_for(late_reader.read(), 10) == b"", "the newcomer was refused"
        assert metrics.sample("carecoord_mllp_connections_closed_total", reason="refused") == refused_before + 1
        release.set()
        for i, (reader, _) in enumerate(senders):
            assert msa(await read_ack(reader)) == ("AA", f"BUSY-{i}")
        for _, writer in [*senders, (late_reader, late)]:
            writer.close()


async def _all_busy(server: MllpServer, n: int) -> bool:
    return server.open_connections == n and all(c.busy for c in server._connections.values())


async def _has_open(server: MllpServer, n: int) -> bool:
    return server.open_connections == n


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        assert hard == resource.RLIM_INFINITY or hard >= needed, f"RLIMIT_NOFILE hard limit {hard} < {needed}"
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


async def test_a_thousand_idle_connections_do_not_lock_out_a_real_sender(runtime: Runtime) -> None:
    idle = 1000
    _raise_fd_limit(idle * 2 + 512)  # both ends of every socket live in this process
    limit = runtime.settings.mllp_max_connections  # the default
    assert limit < idle
    evicted_before = metrics.sample("carecoord_mllp_connections_closed_total", reason="evicted") or 0.0
    started = time.monotonic()
    async with MllpServer(runtime, host="127.0.0.1", port=0) as server:
        held: list[asyncio.StreamWriter] = []
        try:
            for _ in range(idle // 100):
                opened = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", server.port) for _ in range(100)))
                held.extend(w for _, w in opened)
            assert await eventually(lambda: _has_open(server, limit))
            ack = await asyncio.to_thread(send_blocking, server.port, adt(control_id="NOT-LOCKED-OUT"))
            assert msa(ack) == ("AA", "NOT-LOCKED-OUT")
            assert server.open_connections <= limit
        finally:
            for w in held:
                w.close()
    evicted = (metrics.sample("carecoord_mllp_connections_closed_total", reason="evicted") or 0.0) - evicted_before
    assert evicted >= idle + 1 - limit
    assert time.monotonic() - started < 20
    assert await records_on(runtime.settings, runtime.settings.topics.adt) == 1


async def test_an_idle_connection_is_closed_after_the_idle_timeout(runtime: Runtime) -> None:
    async with MllpServer(runtime, host="127.0.0.1", port=0, idle_timeout_s=0.5) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(frame(adt(control_id="THEN-SILENT").encode()))
        await writer.drain()
        assert msa(await read_ack(reader)) == ("AA", "THEN-SILENT")
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed after the idle timeout
        assert 0.4 < time.monotonic() - started < 5
        writer.close()
        await writer.wait_closed()


async def test_a_trickled_frame_is_closed_at_its_deadline(runtime: Runtime) -> None:
    """Slowloris: a byte every 0.1 s never stalls a single read for long; the frame deadline still holds."""
    async with MllpServer(runtime, host="127.0.0.1", port=0, read_timeout_s=0.5) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        data = frame(adt(control_id="TRICKLE").encode())
        started = time.monotonic()
        closed = False
        for byte in data[:-2]:
            if reader.at_eof() or writer.is_closing():
                break
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                closed = True
                break
            try:
                if await asyncio.wait_for(reader.read(), 0.1) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
            except ConnectionError:  # the server closed with unread bytes: the kernel sends a reset
                closed = True
                break
            assert time.monotonic() - started < 5, "the trickling connection was never closed"
        assert closed
        writer.close()
    assert await records_on(runtime.settings, runtime.settings.topics.adt) == 0


# --- the console script ----------------------------------------------------------------------------


def wait_for_port(port: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"nothing listening on {port}")


async def test_cli_mllp_with_configured_kafka_publishes_for_the_consumers(
    runtime: Runtime, settings: Settings, db: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    port = free_loopback_port()
    env = clean_env(
        CARECOORD_DATABASE_URL=database_url,
        CARECOORD_AUTO_MIGRATE="false",
        CARECOORD_KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers or "",
        CARECOORD_TOPICS__ADT=settings.topics.adt,
        CARECOORD_TOPICS__ADT_DEAD_LETTER=settings.topics.adt_dead_letter,
        CARECOORD_JWT_SECRET=TEST_JWT_SECRET,
    )
    proc = await asyncio.create_subprocess_exec(
        CARECOORD, "mllp", "--port", str(port), cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        await asyncio.to_thread(wait_for_port, port)
        ack = await asyncio.to_thread(send_blocking, port, adt(control_id="CLI-1"))
        assert msa(ack) == ("AA", "CLI-1")
        # `carecoord mllp` with Kafka configured runs no consumers: the runtime fixture's apply it.
        assert await eventually(lambda: task_count(db)) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = output.decode()
    assert proc.returncode == 0, text
    assert '"consumers": 0' in text and "mllp stopped" in text and "runtime stopped" in text
    for phi in ("DOE", "JANE", "MRN12345", "19700412"):
        assert phi not in text


def test_cli_mllp_with_embedded_defaults_applies_what_it_acknowledged(tmp_path: Path) -> None:
    port = free_loopback_port()
    env = clean_env(CARECOORD_CONSUMER_SESSION_TIMEOUT_MS="2000", CARECOORD_CONSUMER_HEARTBEAT_INTERVAL_MS="500")
    proc = subprocess.Popen(
        [CARECOORD, "mllp", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_for_port(port)
        assert msa(send_blocking(port, adt(control_id="EMB-1"))) == ("AA", "EMB-1")
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert '"consumers": 3' in output and "embedded broker stopped" in output
    # Shutdown drains the consumers before the memory-only broker stops: the message is applied.
    with sqlite3.connect(tmp_path / "var" / "carecoord.db") as conn:
        assert conn.execute("select count(*) from tasks").fetchone() == (1,)
