"""The console script as a user runs it: real processes, real ports, real signals."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api.auth import mint_token
from app.db.migrate import alembic_config
from app.db.models import Task
from app.messaging.embedded_broker import free_loopback_port
from app.settings import Settings
from tests.conftest import CONTACT_ONLY_RULES, TEST_JWT_SECRET, bearer
from tests.hl7_builder import adt
from tests.integration.test_adt_pipeline import produce

CARECOORD = str(Path(sys.executable).with_name("carecoord"))


def clean_env(**overrides: str) -> dict[str, str]:
    """The caller's environment without any CARECOORD_* setting: embedded defaults unless overridden,
    with the tests' rule set (one task per discharge, attribution not required) as in conftest."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARECOORD_")}
    env.update(CARECOORD_RULES_FILE=str(CONTACT_ONLY_RULES), CARECOORD_REQUIRE_ATTRIBUTION="false")
    env.update(overrides)
    return env


def run(args: list[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run([CARECOORD, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def wait_until_ready(base: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else "carecoord serve exited"
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("carecoord serve never became ready")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen[str]]]:
    port = free_loopback_port()
    env = clean_env(CARECOORD_CONSUMER_SESSION_TIMEOUT_MS="2000", CARECOORD_CONSUMER_HEARTBEAT_INTERVAL_MS="500")
    proc = subprocess.Popen(
        [CARECOORD, "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    wait_until_ready(base, proc)
    yield base, tmp_path, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_serve_with_embedded_defaults_end_to_end(served: tuple[str, Path, subprocess.Popen[str]]) -> None:
    base, cwd, proc = served
    env = clean_env()
    feed = run(["token", "--role", "INTEGRATION", "--sub", "adt-feed"], env, cwd)
    pmc = run(["token", "--role", "PMC", "--team", "T1", "--sub", "pmc-1"], env, cwd)

    resp = httpx.post(f"{base}/ingest/hl7v2", content=adt(), headers={**bearer(feed), "Content-Type": "text/plain"})
    assert resp.status_code == 202, resp.text
    event_id = resp.json()["event_id"]

    deadline = time.monotonic() + 30
    tasks: list[dict] = []
    while time.monotonic() < deadline and not tasks:
        tasks = httpx.get(f"{base}/tasks", params={"role": "PMC"}, headers=bearer(pmc)).json()["items"]
        time.sleep(0.2)
    assert [(t["type"], t["due_at"], t["triggering_event_ids"]) for t in tasks] == [
        ("post-discharge-contact", "2026-11-27T19:00:00Z", [event_id])
    ]

    # Embedded defaults: SQLite file and broker log under ./var, dev secret generated there.
    assert (cwd / "var" / "carecoord.db").exists()
    assert (cwd / "var" / "dev-jwt-secret").exists()
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    # uvicorn re-raises SIGTERM once its graceful shutdown is complete, as supervisors expect.
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output and "embedded broker stopped" in output
    # Logs are structured and carry ids, never patient data.
    assert '"event_id": "' + event_id in output
    for phi in ("DOE", "JANE", "MRN12345", "19700412"):
        assert phi not in output
    with sqlite3.connect(cwd / "var" / "carecoord.db") as conn:
        assert conn.execute("select count(*) from tasks").fetchone() == (1,)


def test_migrate_creates_the_schema(tmp_path: Path) -> None:
    waited = subprocess.run(
        [CARECOORD, "migrate", "--wait", "0"], env=clean_env(), cwd=tmp_path, capture_output=True, text=True
    )
    assert waited.returncode == 1 and "not at this release's schema" in waited.stderr, "an empty database is not"
    out = run(["migrate"], clean_env(), tmp_path)
    assert "this release's schema" in run(["migrate", "--wait", "5"], clean_env(), tmp_path)
    assert "newest schema" in out
    with sqlite3.connect(tmp_path / "var" / "carecoord.db") as conn:
        tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
        version = conn.execute("select version_num from alembic_version").fetchone()
    assert {
        "patients",
        "patient_identifiers",
        "encounters",
        "inbound_events",
        "rejected_events",
        "tasks",
        "task_history",
        "audit_events",
        "fhir_resources",
        "questionnaires",
        "screening_events",
        "roster_imports",
        "roster_members",
        "roster_changes",
        "consents",
    } <= tables
    assert version == (ScriptDirectory.from_config(alembic_config()).get_current_head(),)


def test_token_requires_a_role(tmp_path: Path) -> None:
    done = subprocess.run([CARECOORD, "token"], env=clean_env(), cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode != 0 and "--role" in done.stderr


def test_token_mints_role_scopes_or_the_given_ones(tmp_path: Path) -> None:
    import jwt

    env = clean_env()
    default = jwt.decode(run(["token", "--role", "BHCF", "--team", "T1", "--team", "T2"], env, tmp_path).strip(),
                         options={"verify_signature": False})  # fmt: skip
    assert default["teams"] == ["T1", "T2"] and "user/Task.rus" in default["scope"].split()
    auditor = jwt.decode(
        run(["token", "--role", "AUDITOR"], env, tmp_path).strip(), options={"verify_signature": False}
    )
    assert auditor["scope"] == "user/AuditEvent.rs"
    args = ["token", "--role", "PMC", "--scope", "user/Task.rs", "--scope", "user/Patient.r"]
    given = jwt.decode(run(args, env, tmp_path).strip(), options={"verify_signature": False})
    assert given["scope"] == "user/Task.rs user/Patient.r"


async def test_consume_applies_events_and_stops_cleanly_on_sigterm(
    settings: Settings, db: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    env = clean_env(
        CARECOORD_DATABASE_URL=database_url,
        CARECOORD_KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers or "",
        CARECOORD_TOPICS__ADT=settings.topics.adt,
        CARECOORD_TOPICS__ADT_DEAD_LETTER=settings.topics.adt_dead_letter,
        CARECOORD_CONSUMER_GROUP=settings.consumer_group,
        CARECOORD_CONSUMER_SESSION_TIMEOUT_MS="2000",
        CARECOORD_CONSUMER_HEARTBEAT_INTERVAL_MS="500",
        CARECOORD_JWT_SECRET=TEST_JWT_SECRET,
        CARECOORD_OPS_PORT=str(ops_port := free_loopback_port()),
    )
    proc = await asyncio.create_subprocess_exec(
        CARECOORD,
        "consume",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await produce(settings, adt().encode())
        deadline = time.monotonic() + 30
        tasks = 0
        while time.monotonic() < deadline and tasks == 0:
            async with db.connect() as conn:
                tasks = int(await conn.scalar(select(func.count()).select_from(Task)) or 0)
            await asyncio.sleep(0.2)
        assert tasks == 1
        # The operations port: probes, and the consumer's own metrics for Prometheus (authenticated).
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ops_port}") as ops:
            assert (await ops.get("/healthz")).status_code == 200
            assert (await ops.get("/readyz")).json()["checks"]["consumers"] is True
            assert (await ops.get("/metrics")).status_code == 401
            scraped = await ops.get("/metrics", headers=bearer(mint_token(settings, "prometheus", ["METRICS"], [], 60)))
            assert f'carecoord_events_applied_total{{topic="{settings.topics.adt}",type="ADT^A03"}} 1.0' in scraped.text
            assert 'carecoord_tasks_created_total{role="PMC",type="post-discharge-contact"} 1.0' in scraped.text
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, output.decode()
    assert b"runtime stopped" in output
