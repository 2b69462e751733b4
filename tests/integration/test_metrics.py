"""GET /metrics after real traffic: events by topic and type, publish-to-applied latency, lag, tasks by
type and role (counted on commit only), HTTP latency by route template; no identifiers in any label."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api.auth import mint_token
from app.messaging.embedded_broker import free_loopback_port
from app.metrics import sample
from app.runtime import Runtime
from app.settings import Settings
from app.state.tasks import escalate_overdue, overdue_counts
from tests.conftest import TEST_JWT_SECRET, bearer, eventually
from tests.hl7_builder import adt
from tests.integration.test_adt_pipeline import produce
from tests.integration.test_cli import CARECOORD, clean_env, wait_until_ready

CONTACT = {"type": "post-discharge-contact", "role": "PMC"}


def value(name: str, **labels: str) -> float:
    return sample(name, **labels) or 0.0


async def test_metrics_follow_events_tasks_and_requests(
    runtime: Runtime, client: httpx.AsyncClient, settings: Settings, token_for: Callable[..., str]
) -> None:
    topic = settings.topics.adt
    before = {
        "applied": value("carecoord_events_applied_total", topic=topic, type="ADT^A03"),
        "created": value("carecoord_tasks_created_total", **CONTACT),
        "completed": value("carecoord_tasks_completed_total", **CONTACT),
        "escalated": value("carecoord_tasks_escalated_total", **CONTACT),
    }
    await produce(settings, adt("A03", mrn="MRN-METRICS-1").encode(), b"not hl7 at all")

    async def both_handled() -> bool:
        return (
            value("carecoord_events_consumed_total", topic=topic, type="unknown") >= 1
            and value("carecoord_events_applied_total", topic=topic, type="ADT^A03") == before["applied"] + 1
        )

    assert await eventually(both_handled)
    assert value("carecoord_events_rejected_total", topic=topic, type="unknown") >= 1
    assert value("carecoord_event_processing_seconds_count", topic=topic) >= 1
    assert value("carecoord_tasks_created_total", **CONTACT) == before["created"] + 1

    async def lag_reported() -> bool:
        return any(sample("carecoord_consumer_lag", topic=topic, partition=str(p)) == 0 for p in range(3))

    assert await eventually(lag_reported)

    pmc = bearer(token_for("PMC"))
    queue = await client.get("/tasks", params={"role": "PMC"}, headers=pmc)
    [task] = queue.json()["items"]
    explained = await client.get(f"/tasks/{task['id']}/explain", headers=pmc)
    assert explained.status_code == 200
    done = await client.post(
        f"/tasks/{task['id']}/complete", json={"outcome": "reached"}, headers={**pmc, "If-Match": 'W/"1"'}
    )
    assert done.status_code == 200, done.text
    assert value("carecoord_tasks_completed_total", **CONTACT) == before["completed"] + 1

    scraped = await client.get("/metrics", headers=bearer(token_for("METRICS")))
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    text = scraped.text
    assert 'route="/tasks/{task_id}/explain"' in text and 'route="/tasks"' in text
    assert 'carecoord_http_request_duration_seconds_count{method="GET",route="/tasks",status="200"}' in text
    assert task["id"] not in text and "MRN-METRICS-1" not in text and "DOE" not in text
    assert (await client.get("/metrics", headers=bearer(token_for("DATA")))).status_code == 403
    assert (await client.get("/metrics")).status_code == 401


async def test_task_counters_count_commits_not_rollbacks(runtime: Runtime, settings: Settings) -> None:
    await produce(settings, adt("A03", mrn="MRN-METRICS-2", control_id="M-2").encode())
    assert runtime.sessions is not None

    async def created() -> dict[tuple[str, str], int]:
        async with runtime.sessions() as session:
            return await overdue_counts(session, datetime.now(UTC) + timedelta(days=400))

    overdue = await eventually(created)
    assert overdue[("post-discharge-contact", "PMC")] >= 1
    escalated = value("carecoord_tasks_escalated_total", **CONTACT)
    far_future = datetime.now(UTC) + timedelta(days=400)

    async with runtime.sessions() as session:
        await session.begin()
        assert await escalate_overdue(session, far_future) >= 1
        await session.flush()
        await session.rollback()
    assert value("carecoord_tasks_escalated_total", **CONTACT) == escalated, "rolled back: not counted"

    async with runtime.sessions() as session, session.begin():
        count = await escalate_overdue(session, far_future)
    assert value("carecoord_tasks_escalated_total", **CONTACT) == escalated + count


def test_serve_with_workers_reports_every_workers_requests(
    settings: Settings, db: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    """`serve --workers 2`: whichever worker answers the scrape reports both workers' requests
    (prometheus_client multiprocess mode); per-worker registries would each show about half."""
    port = free_loopback_port()
    env = clean_env(
        CARECOORD_DATABASE_URL=database_url,
        CARECOORD_KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers or "",
        CARECOORD_RUN_CONSUMERS="false",
        CARECOORD_JWT_SECRET=TEST_JWT_SECRET,
        CARECOORD_AUTO_MIGRATE="false",
    )
    stale = tmp_path / "var" / "prometheus-multiproc" / "counter_999999.db"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left over by an earlier run")
    proc = subprocess.Popen(
        [CARECOORD, "serve", "--workers", "2", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, proc)
        assert not stale.exists(), "the directory is emptied before the workers start"
        token = bearer(mint_token(settings, "prometheus", ["METRICS"], [], 60))
        # A new connection per request (no keep-alive), so requests and scrapes spread over the workers.
        for _ in range(40):
            assert httpx.get(f"{base}/healthz").status_code == 200
        counts = set()
        for _ in range(6):
            scraped = httpx.get(f"{base}/metrics", headers=token).text
            [line] = [
                ln
                for ln in scraped.splitlines()
                if ln.startswith('carecoord_http_request_duration_seconds_count{method="GET",route="/healthz"')
            ]
            counts.add(float(line.rsplit(" ", 1)[1]))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert counts == {40.0}, counts
