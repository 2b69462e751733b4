"""`serve --workers N` (app/api/workers.py): each worker listens on its own SO_REUSEPORT socket, so new
keep-alive connections spread over the workers (with one shared socket the first worker to wake took
most of a burst); a worker that dies is started again; SIGTERM stops them all."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from app.messaging.embedded_broker import free_loopback_port
from app.settings import Settings
from tests.conftest import TEST_JWT_SECRET
from tests.integration.test_cli import CARECOORD, clean_env, wait_until_ready


def children(pid: int) -> list[int]:
    """The worker processes of `pid` (not multiprocessing's resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid and b"spawn_main" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


def established_on(pid: int, port: int) -> int:
    """Established TCP connections to `port` held by process `pid` (its socket fds against /proc/net/tcp)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port, state, inode = int(fields[1].rsplit(":", 1)[1], 16), fields[3], fields[9]
            count += local_port == port and state == "01" and inode in inodes
    return count


def serve_two_workers(
    tmp_path: Path, port: int, database_url: str, *, read_stderr: bool = False, **settings: str
) -> subprocess.Popen[str]:
    env = clean_env(
        CARECOORD_DATABASE_URL=database_url,
        CARECOORD_RUN_CONSUMERS="false",
        CARECOORD_JWT_SECRET=TEST_JWT_SECRET,
        CARECOORD_AUTO_MIGRATE="false",
        **settings,
    )
    return subprocess.Popen(
        [CARECOORD, "serve", "--workers", "2", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE if read_stderr else subprocess.DEVNULL,  # an unread pipe would fill and block
        text=True,
    )


def test_workers_share_connections_restart_and_stop(
    settings: Settings, db: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    port = free_loopback_port()
    bootstrap = settings.kafka_bootstrap_servers or ""
    proc = serve_two_workers(tmp_path, port, database_url, CARECOORD_KAFKA_BOOTSTRAP_SERVERS=bootstrap)
    base = f"http://127.0.0.1:{port}"
    sockets: list[socket.socket] = []
    try:
        wait_until_ready(base, proc)
        workers = children(proc.pid)
        assert len(workers) == 2
        # 40 keep-alive connections opened in a burst (as wrk, or a proxy's pool, opens them): the kernel
        # completes them before any worker accepts; then a request on each.
        sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
        for sock in sockets:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        for sock in sockets:
            assert sock.recv(64).startswith(b"HTTP/1.1 200")
        held = sorted(established_on(pid, port) for pid in workers)
        assert sum(held) == 40 and held[0] >= 8, held  # one shared socket gave splits like 43/7 of 50

        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            replaced = [pid for pid in children(proc.pid) if pid not in workers]
            if replaced:
                break
            time.sleep(0.2)
        assert replaced, "the dead worker was not started again"
        wait_until_ready(base, proc)
        assert len(children(proc.pid)) == 2
    finally:
        for sock in sockets:
            sock.close()
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0
    assert not children(proc.pid)


def test_workers_that_keep_dying_at_startup_stop_the_server(tmp_path: Path, database_url: str) -> None:
    """A worker that cannot start (here: a missing rules file) is retried with a growing pause, then the
    server exits non-zero, so systemd or Kubernetes sees the failure instead of a restart loop."""
    proc = serve_two_workers(
        tmp_path,
        free_loopback_port(),
        database_url,
        read_stderr=True,
        CARECOORD_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9",
        CARECOORD_RULES_FILE=str(tmp_path / "missing-rules.toml"),
        CARECOORD_WORKER_RESTART_PAUSE_S="0.1",  # 0.1, then 0.2 s instead of 1 and 2 s
        CARECOORD_WORKER_QUICK_DEATHS_MAX="3",
    )
    try:
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 1
    assert "died 3 times at startup" in stderr
