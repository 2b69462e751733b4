"""The same limits against a real `carecoord serve` (uvicorn): a chunked upload beyond the cap over a raw
socket gets 413, a CR/LF in a download name neither injects a header nor drops the connection, and the
access log names route templates and statuses, never paths with identifiers or query strings. A
misconfiguration with secrets in the environment prints none of them."""

from __future__ import annotations

import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from subprocess import Popen

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api.auth import mint_token
from app.messaging.embedded_broker import free_loopback_port
from app.settings import Settings
from tests.conftest import TEST_JWT_SECRET, bearer
from tests.integration.test_cli import CARECOORD, clean_env, wait_until_ready

IDENTIFIER = "MRN-ACCESS-LOG-4417"


@contextmanager
def running_server(settings: Settings, database_url: str, tmp_path: Path) -> Iterator[tuple[int, Path, Popen[str]]]:
    """`carecoord serve` on a free port against the test database and broker; its log lines go to a file."""
    port = free_loopback_port()
    log = tmp_path / "serve.log"
    env = clean_env(
        CARECOORD_DATABASE_URL=database_url,
        CARECOORD_RUN_CONSUMERS="false",
        CARECOORD_JWT_SECRET=TEST_JWT_SECRET,
        CARECOORD_AUTO_MIGRATE="false",
        CARECOORD_KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers or "",
        CARECOORD_LOG_LEVEL="DEBUG",
    )
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [CARECOORD, "serve", "--port", str(port)], cwd=tmp_path, env=env, stdout=sink, stderr=sink, text=True
        )
        try:
            wait_until_ready(f"http://127.0.0.1:{port}", proc)
            yield port, log, proc
        finally:
            proc.terminate()
            proc.wait(timeout=30)


@pytest.fixture
def server(
    settings: Settings, db: AsyncEngine, database_url: str, tmp_path: Path
) -> Iterator[tuple[int, Path, Popen[str]]]:
    with running_server(settings, database_url, tmp_path) as running:
        yield running


def raw_request(port: int, head: bytes, chunks: Iterator[bytes]) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        try:
            for chunk in chunks:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the rest: what is read below says what it answered
        received = b""
        while b"\r\n\r\n" not in received:
            data = sock.recv(65536)
            if not data:
                break
            received += data
        return received


def test_served_limits_headers_and_access_log(server: tuple[int, Path, Popen[str]], settings: Settings) -> None:
    port, log, _ = server
    token = mint_token(settings, "tester", ["SUPERVISOR", "DATA"], [], 600)
    base = f"http://127.0.0.1:{port}"

    chunk = b" " * 65536
    head = (
        f"POST /tasks/{uuid.uuid4()}/complete HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    answer = raw_request(port, head, iter([chunk] * (settings.http_max_body_bytes // len(chunk) + 2)))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]

    with httpx.Client(base_url=base, headers=bearer(token), timeout=30) as client:
        export = client.get("/rosters/exports/ens", params={"sender": "a\r\nSet-Cookie: owned=1\u00e9"})
        assert export.status_code == 200, export.text[:300]
        assert "set-cookie" not in export.headers
        assert export.headers["content-disposition"].isascii()
        task = uuid.uuid4()
        looked = client.get(f"/tasks/{task}", params={"patient": IDENTIFIER})
        assert looked.status_code == 404
        big = client.get("/tasks", headers={"X-Padding": "a" * settings.http_max_header_bytes})
        assert big.status_code in (400, 431), big.text[:200]

    text = log.read_text()
    assert IDENTIFIER not in text and str(task) not in text, "an identifier reached the log"
    assert '"route": "/tasks/{task_id}"' in text and '"status": 404' in text


def test_configuration_errors_print_no_secret_values(tmp_path: Path) -> None:
    secrets = {"jwt": "JWT-SECRET-VALUE-91", "kafka": "KAFKA-PASSWORD-VALUE-92", "db": "DB-PASSWORD-VALUE-93"}
    env = clean_env(
        CARECOORD_ENVIRONMENT="production",
        CARECOORD_JWT_SECRET=secrets["jwt"],  # too short for production: one of the errors
        CARECOORD_DATABASE_URL=f"postgresql+asyncpg://carecoord:{secrets['db']}@db.invalid/carecoord",
        CARECOORD_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        CARECOORD_KAFKA_SASL_PASSWORD=secrets["kafka"],
    )
    for args in (["migrate"], ["serve"], ["token", "--role", "SUPERVISOR"]):
        done = subprocess.run([CARECOORD, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        output = done.stdout + done.stderr
        assert done.returncode != 0 and "CARECOORD_JWT_SECRET" in output, output[-2000:]
        for value in secrets.values():
            assert value not in output, f"{args}: a secret value was printed"
    bad_type = clean_env(CARECOORD_DATABASE_URL=f"postgresql://u:{secrets['db']}@h/d", CARECOORD_PORT="eighty")
    done = subprocess.run([CARECOORD, "migrate"], env=bad_type, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode != 0 and "CARECOORD_PORT" in done.stderr, done.stderr[-2000:]
    assert secrets["db"] not in done.stdout + done.stderr and "eighty" not in done.stderr
