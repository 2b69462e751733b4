"""MLLP listener: HL7 v2 over TCP, each message published to Kafka and only then acknowledged.

Framing (MLLP release 1): `0x0B <message> 0x1C 0x0D`. Per connection, messages are handled one at a
time in arrival order; every complete frame gets exactly one HL7 ACK on the same connection:

- AA after `publish_hl7v2` returned, i.e. after the broker acknowledged the record;
- AE / AR with an ERR segment for a message refused, and nothing published
  (the choice between AE and AR, and the ERR codes, are explained in `app.ingest.hl7_ack`).

Robustness: bytes before a start block are discarded; frames may arrive split across any number of
TCP reads or several in one read; a start block inside an unterminated frame abandons that frame and
starts a new one (the sender gave up on it); a frame larger than `ingest_max_bytes` is not buffered --
its first bytes are kept to address the AR, the rest is discarded up to the end block; a connection that
closes mid-frame, or whose started frame is not complete within `mllp_read_timeout_s` (a deadline for
the whole frame, so trickling a byte at a time does not extend it: slowloris), is closed without an ACK
(the sender never saw one, so it resends). Logs carry connection ids, sizes, codes and event ids only --
never message content.

Connection limits: a connection silent for `mllp_idle_timeout_s` between frames is closed (interface
engines reconnect on their next message). At most `mllp_max_connections` are open; when a new one
arrives at the limit, the longest-idle connection that is not processing a message is closed to make
room (between-frame ones before mid-frame ones), so idle or stalled sockets can never lock a real
sender out. Only when every connection is processing a message is the newcomer refused. Every close
the listener decides is counted in `carecoord_mllp_connections_closed{reason}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from dataclasses import dataclass

from aiokafka.errors import KafkaError

from app import metrics
from app.ingest import hl7_ack
from app.ingest.publish import DecodeError, MessageTooLarge, publish_hl7v2
from app.runtime import Runtime

log = logging.getLogger(__name__)

START_BLOCK = 0x0B
END_BLOCK = 0x1C
CARRIAGE_RETURN = 0x0D
MEDIA_TYPE = "application/hl7-v2"
READ_CHUNK = 64 * 1024
#: Bytes kept from an oversize frame so its AR can still quote MSH-10 and swap MSH-3..6.
OVERSIZE_HEAD_BYTES = 8 * 1024


def frame(payload: bytes) -> bytes:
    """Wrap one message in an MLLP block."""
    return bytes([START_BLOCK]) + payload + bytes([END_BLOCK, CARRIAGE_RETURN])


@dataclass(frozen=True, slots=True)
class Frame:
    payload: bytes


@dataclass(frozen=True, slots=True)
class OversizeFrame:
    """A frame larger than the limit: only its first bytes were kept."""

    head: bytes
    size: int


class MllpDecoder:
    """Incremental MLLP deframer: feed it bytes as they arrive, get complete frames back. Pure, no I/O.

    Memory is bounded by `max_bytes` (+ one read): a frame that grows past it is counted, not kept.
    """

    def __init__(self, max_bytes: int, head_bytes: int = OVERSIZE_HEAD_BYTES) -> None:
        self.max_bytes = max_bytes
        self.head_bytes = head_bytes
        self.junk_bytes = 0  # discarded outside any frame
        self.abandoned_frames = 0  # unterminated frames superseded by a new start block
        self._in_frame = False
        self._buf = bytearray()
        self._head = b""
        self._size = 0
        self._oversize = False
        self._end_pending = False  # the last byte seen was an end block; is the next one CR?

    @property
    def in_frame(self) -> bool:
        return self._in_frame

    @property
    def frame_bytes(self) -> int:
        """Bytes received so far of the frame in progress."""
        return self._size

    def feed(self, data: bytes) -> list[Frame | OversizeFrame]:
        out: list[Frame | OversizeFrame] = []
        i, n = 0, len(data)
        while i < n:
            if not self._in_frame:
                start = data.find(START_BLOCK, i)
                if start < 0:
                    self.junk_bytes += n - i
                    break
                self.junk_bytes += start - i
                self._start()
                i = start + 1
                continue
            if self._end_pending:
                self._end_pending = False
                if data[i] == CARRIAGE_RETURN:
                    out.append(self._finish())
                    i += 1
                    continue
                self._take(bytes([END_BLOCK]))  # a lone 0x1C is not an end of block
            end = data.find(END_BLOCK, i)
            restart = data.find(START_BLOCK, i, end if end >= 0 else n)
            if restart >= 0:
                self.abandoned_frames += 1
                self._start()
                i = restart + 1
                continue
            if end < 0:
                self._take(data[i:])
                break
            self._take(data[i:end])
            if end + 1 == n:
                self._end_pending = True
                break
            if data[end + 1] == CARRIAGE_RETURN:
                out.append(self._finish())
                i = end + 2
            else:
                self._take(data[end : end + 1])
                i = end + 1
        return out

    def _start(self) -> None:
        self._in_frame = True
        self._buf = bytearray()
        self._head = b""
        self._size = 0
        self._oversize = False
        self._end_pending = False

    def _take(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._oversize:
            return
        if self._size > self.max_bytes:
            self._oversize = True
            self._head = bytes((self._buf + chunk)[: self.head_bytes])
            self._buf = bytearray()
            return
        self._buf += chunk

    def _finish(self) -> Frame | OversizeFrame:
        event: Frame | OversizeFrame = (
            OversizeFrame(self._head, self._size) if self._oversize else Frame(bytes(self._buf))
        )
        self._in_frame = False
        self._buf = bytearray()
        self._head = b""
        self._size = 0
        self._oversize = False
        return event


class MllpServer:
    """The listener. `async with MllpServer(runtime):` serves until the block exits.

    `runtime` must be started (it publishes through `runtime.publisher`). Stopping stops accepting,
    lets messages being processed finish (up to `grace_s`) and closes every connection.
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        host: str | None = None,
        port: int | None = None,
        read_timeout_s: float | None = None,
        idle_timeout_s: float | None = None,
        max_connections: int | None = None,
        grace_s: float = 10.0,
    ) -> None:
        s = runtime.settings
        self.runtime = runtime
        self.host = host if host is not None else s.mllp_host
        self.requested_port = port if port is not None else s.mllp_port
        self.read_timeout_s = read_timeout_s if read_timeout_s is not None else s.mllp_read_timeout_s
        self.idle_timeout_s = idle_timeout_s if idle_timeout_s is not None else s.mllp_idle_timeout_s
        self.max_connections = max_connections if max_connections is not None else s.mllp_max_connections
        self.grace_s = grace_s
        self._server: asyncio.Server | None = None
        self._connections: dict[int, _Connection] = {}
        self._ids = itertools.count(1)
        self._closing = False

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._closing = False
        self._server = await asyncio.start_server(self._handle, self.host, self.requested_port)
        log.info("mllp listening", extra={"host": self.host, "port": self.port})

    async def stop(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections.values()):
            if not conn.busy:
                conn.task.cancel()
        pending = [c.task for c in self._connections.values()]
        if pending:
            _, still = await asyncio.wait(pending, timeout=self.grace_s)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still, timeout=1)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        log.info("mllp stopped")

    async def __aenter__(self) -> MllpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    def _make_room(self) -> bool:
        """At the limit, close the longest-idle connection not processing a message. False: none can go."""
        if len(self._connections) < self.max_connections:
            return True
        idle = [(c.decoder.in_frame, c.last_read, cid) for cid, c in self._connections.items() if not c.busy]
        if not idle:
            return False
        _, _, victim_id = min(idle)
        victim = self._connections.pop(victim_id)
        victim.evicted = True
        victim.task.cancel()
        metrics.MLLP_CONNECTIONS_CLOSED.labels("evicted").inc()
        return True

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn_id = next(self._ids)
        peer = writer.get_extra_info("peername")
        peer_host = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if self._closing or not self._make_room():
            log.warning(
                "mllp connection refused", extra={"conn": conn_id, "peer": peer_host, "open": len(self._connections)}
            )
            metrics.MLLP_CONNECTIONS_CLOSED.labels("refused").inc()
            await _close(writer)
            return
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        decoder = MllpDecoder(self.runtime.settings.ingest_max_bytes)
        conn = _Connection(task, decoder, last_read=loop.time())
        self._connections[conn_id] = conn
        stats = {"conn": conn_id, "peer": peer_host}
        log.info("mllp connection opened", extra=stats)
        messages = 0
        reason = "closed by peer"
        frame_deadline = 0.0
        try:
            while not self._closing:
                timeout = max(frame_deadline - loop.time(), 0.0) if decoder.in_frame else self.idle_timeout_s
                try:
                    data = await asyncio.wait_for(reader.read(READ_CHUNK), timeout)
                except TimeoutError:
                    closed_for = "frame_timeout" if decoder.in_frame else "idle"
                    reason = "frame not complete in time" if decoder.in_frame else "idle timeout"
                    metrics.MLLP_CONNECTIONS_CLOSED.labels(closed_for).inc()
                    break
                if not data:
                    break
                conn.last_read = loop.time()
                was_in_frame = decoder.in_frame
                events = decoder.feed(data)
                if decoder.in_frame and (events or not was_in_frame):
                    frame_deadline = conn.last_read + self.read_timeout_s  # a new frame started in this read
                if not events:
                    continue
                conn.busy = True
                try:
                    for event in events:
                        messages += 1
                        writer.write(frame(await self._answer(event, conn_id)))
                        await writer.drain()
                finally:
                    conn.busy = False
            else:
                reason = "listener stopping"
        except asyncio.CancelledError:
            reason = "evicted: connection limit reached" if conn.evicted else "listener stopping"
        except (ConnectionError, OSError) as exc:
            reason = f"connection error: {type(exc).__name__}"
        finally:
            self._connections.pop(conn_id, None)
            log_extra = {
                **stats,
                "reason": reason,
                "messages": messages,
                "partial_frame_bytes": decoder.frame_bytes if decoder.in_frame else 0,
                "junk_bytes": decoder.junk_bytes,
                "abandoned_frames": decoder.abandoned_frames,
            }
            if decoder.in_frame:
                log.warning("mllp connection closed mid-frame; the partial message was dropped", extra=log_extra)
            else:
                log.info("mllp connection closed", extra=log_extra)
            await _close(writer)

    async def _answer(self, event: Frame | OversizeFrame, conn_id: int) -> bytes:
        """Publish one message and build its ACK. Never raises for a bad message or a broker failure."""
        limit = self.runtime.settings.ingest_max_bytes
        extra: dict[str, object] = {"conn": conn_id}
        if isinstance(event, OversizeFrame):
            verdict = hl7_ack.for_oversize(event.size, limit)
            raw = event.head
            extra["size"] = event.size
        else:
            raw = event.payload
            extra["size"] = len(raw)
            try:
                published = await publish_hl7v2(self.runtime, raw, source="mllp", media_type=MEDIA_TYPE)
            except MessageTooLarge as exc:
                verdict = hl7_ack.for_oversize(exc.size, exc.limit)
            except DecodeError as exc:
                verdict = hl7_ack.for_decode_error(exc.reason, exc.field)
                extra["field"] = exc.field
            except KafkaError as exc:
                verdict = hl7_ack.for_broker_failure()
                extra["error"] = type(exc).__name__
            except Exception as exc:
                verdict = hl7_ack.for_internal_error()
                extra["error"] = type(exc).__name__
            else:
                verdict = hl7_ack.ACCEPTED
                extra.update(event_id=str(published.event_id), partition=published.partition, offset=published.offset)
        extra["ack"] = str(verdict.ack_code)
        if verdict.error is not None:
            extra["err"] = verdict.error.code
            log.warning("mllp message refused", extra=extra)
        else:
            log.info("mllp message accepted", extra=extra)
        try:
            return hl7_ack.build_ack(raw, verdict)
        except Exception as exc:  # never leave the sender without an answer
            log.error("mllp ack from the message header failed", extra={"conn": conn_id, "error": type(exc).__name__})
            return hl7_ack.build_ack(b"", verdict)


@dataclass(slots=True)
class _Connection:
    task: asyncio.Task[None]
    decoder: MllpDecoder
    last_read: float  # loop time of the last bytes received (or of the accept)
    busy: bool = False  # processing a message: never evicted
    evicted: bool = False


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
