"""`serve --workers N`: N API processes, each with its own listening socket on the same port.

Why: with uvicorn's own workers every process accepts from one shared socket, and asyncio accepts all
queued connections at each wake-up, so whichever worker wakes first takes most of a burst of new
keep-alive connections and keeps them: under the worklist benchmark one worker held 43 of 50 clients
and the other 7, and the tail latency was that worker's queue (bench/api.py, docs/benchmarks.md). With
SO_REUSEPORT (Linux) each worker listens on its own socket and the kernel spreads new connections over
them. A worker that dies is started again, with a growing pause; workers that keep dying at startup
(a database that is down, bad settings) stop the whole server with a non-zero exit, for the process
manager to see. SIGTERM, SIGINT or SIGHUP stops them all (each finishes its requests in flight, as
uvicorn does), and a worker exits when its supervisor is gone. Without SO_REUSEPORT, uvicorn's own
supervisor runs the workers.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from types import FrameType

import uvicorn

from app.settings import Settings

APP_FACTORY = "app.api.app:worker_app"
BACKLOG = 2048  # uvicorn's default
# uvicorn's access log prints full query strings (identifiers): the app logs route templates instead.
SERVER_OPTIONS: dict[str, object] = {"log_config": None, "proxy_headers": False, "access_log": False}
STOP_TIMEOUT_S = 60.0  # graceful shutdown allowed before a worker is killed
POLL_S = 0.5


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """The CARECOORD_WORKER_* settings: how a dead worker is started again and when the server gives up."""

    pause_s: float  # first pause before a dead worker is started again; doubles per quick death
    pause_max_s: float
    quick_death_s: float  # a worker dying sooner than this after its start died "quickly" (at startup)
    quick_deaths_max: int  # consecutive quick deaths of one worker slot before the server exits 1

    @classmethod
    def of(cls, settings: Settings) -> RestartPolicy:
        return cls(
            pause_s=settings.worker_restart_pause_s,
            pause_max_s=settings.worker_restart_pause_max_s,
            quick_death_s=settings.worker_quick_death_s,
            quick_deaths_max=settings.worker_quick_deaths_max,
        )

    def pause(self, quick_deaths: int) -> float:
        return min(self.pause_max_s, self.pause_s * 2 ** max(0, quick_deaths - 1))


def reuse_port_supported() -> bool:
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def _socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def listening_socket(host: str, port: int) -> socket.socket:
    sock = _socket(host, port, reuse_port=True)
    sock.listen(BACKLOG)
    return sock


def _exit_with_parent(parent: int) -> None:
    """A worker whose supervisor was killed (SIGKILL, the OOM killer) must not go on serving beside the
    next release's workers: it stops itself."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def _worker(host: str, port: int, parent: int) -> None:
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    config = uvicorn.Config(APP_FACTORY, factory=True, **SERVER_OPTIONS)
    uvicorn.Server(config).run(sockets=[listening_socket(host, port)])


def _mark_dead(pid: int | None) -> None:
    """prometheus_client's multiprocess mode keeps a dead process's live gauges unless told."""
    if pid is not None and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def serve_workers(host: str, port: int, workers: int, restarts: RestartPolicy) -> int:
    """Run `workers` API processes until a stop signal; the exit status (0, or 1 when workers kept dying)."""
    if not reuse_port_supported():
        uvicorn.run(APP_FACTORY, factory=True, workers=workers, host=host, port=port, **SERVER_OPTIONS)
        return 0
    # Without SO_REUSEPORT this bind fails against any listener on the port, ours from an earlier run too.
    _socket(host, port, reuse_port=False).close()
    spawn = multiprocessing.get_context("spawn")
    stopping = False

    def start() -> tuple[BaseProcess, float]:
        process = spawn.Process(target=_worker, args=(host, port, os.getpid()), name="carecoord-api")
        process.start()
        return process, time.monotonic()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    slots = [start() for _ in range(workers)]
    quick_deaths = [0] * workers
    status = 0
    while not stopping:
        for i, (process, started) in enumerate(slots):
            if process.is_alive():
                continue
            _mark_dead(process.pid)
            # A death after a good run starts the count again: only deaths in a row at startup give up.
            quick_deaths[i] = quick_deaths[i] + 1 if time.monotonic() - started < restarts.quick_death_s else 0
            if quick_deaths[i] >= restarts.quick_deaths_max:
                print(f"carecoord: a worker died {quick_deaths[i]} times at startup; stopping", file=sys.stderr)
                stopping, status = True, 1
                break
            deadline = time.monotonic() + restarts.pause(quick_deaths[i])
            while not stopping and time.monotonic() < deadline:
                time.sleep(0.1)
            if stopping:
                break
            slots[i] = start()
        time.sleep(POLL_S)
    for process, _ in slots:
        if process.is_alive():
            process.terminate()  # SIGTERM: uvicorn's graceful shutdown
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for process, _ in slots:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()
        _mark_dead(process.pid)
    return status
