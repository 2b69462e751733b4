"""GET /metrics after real traffic: events by topic and type, publish-to-applied latency, lag, tasks by
type and role (counted on commit only), HTTP latency by route template; no identifiers in any label."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx

from app.metrics import sample
from app.runtime import Runtime
from app.settings import Settings
from app.state.tasks import escalate_overdue, overdue_counts
from tests.conftest import bearer, eventually
from tests.hl7_builder import adt
from tests.integration.test_adt_pipeline import produce

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
