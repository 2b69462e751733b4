"""ADT over the real broker into the real database, read back over HTTP."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import AuditEvent, Encounter, InboundEvent, Patient, RejectedEvent, Task, TaskHistory
from app.db.session import create_engine
from app.messaging.kafka_clients import KafkaConnection
from app.messaging.keys import patient_partition_key
from app.runtime import Runtime
from app.settings import Settings
from tests.access_builder import record_consent
from tests.conftest import bearer, eventually, wait_until_assigned
from tests.hl7_builder import adt


async def produce(settings: Settings, *payloads: bytes, key: bytes | None = None) -> None:
    """Publish as a hospital integration engine would: straight to the ADT topic."""
    # Room for oversize test messages: the consumer, not the producer, must be the one to refuse them.
    producer = KafkaConnection.from_settings(settings).producer(max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        for payload in payloads:
            await producer.send_and_wait(settings.topics.adt, payload, key=key)
    finally:
        await producer.stop()


async def count(engine: AsyncEngine, model: type) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(model)) or 0)


async def tasks_over_http(client: httpx.AsyncClient, token: str, **params: str) -> list[dict]:
    resp = await client.get("/tasks", params=params, headers=bearer(token))
    assert resp.status_code == 200, resp.text
    return resp.json()["items"]


async def test_a03_on_topic_becomes_a_task_over_http(
    runtime: Runtime, client: httpx.AsyncClient, token_for: Callable[..., str], db: AsyncEngine
) -> None:
    key = patient_partition_key("urn:hl7v2:aa:GOODHEALTH", "MRN12345")
    await produce(runtime.settings, adt().encode(), key=key)

    pmc = token_for("PMC")
    tasks = await eventually(lambda: tasks_over_http(client, pmc, role="PMC"))
    assert len(tasks) == 1
    task = tasks[0]
    assert task["type"] == "post-discharge-contact"
    assert task["status"] == "ready" and task["role"] == "PMC"
    # PV1-45 20261120140000-0500 = 19:00Z; due 7 calendar days later on the facility clock.
    assert task["due_at"] == "2026-11-27T19:00:00Z"
    assert task["due_basis"]["anchor"] == "discharge"
    assert task["rule"] == {"id": "post-discharge-contact", "version": "2"}
    assert task["patient"]["name"] == "JANE DOE" and task["patient"]["birth_date"] == "1970-04-12"

    async with db.connect() as conn:
        event = (await conn.execute(select(InboundEvent))).one()
        encounter = (await conn.execute(select(Encounter))).one()
        history = (await conn.execute(select(TaskHistory))).one()
    assert task["triggering_event_ids"] == [str(event.id)]
    assert (event.topic, event.status, event.message_identity) == (
        runtime.settings.topics.adt,
        "applied",
        "hl7v2|GOODHEALTH|MSG-0001",
    )
    assert event.offset == 0
    assert encounter.status == "finished" and encounter.class_code == "IMP"
    assert encounter.discharge_at == datetime(2026, 11, 20, 19, 0, tzinfo=UTC)
    assert history.action == "created" and history.actor == "rule:post-discharge-contact@2"


async def test_ingest_endpoint_publishes_then_task_appears(
    runtime: Runtime, client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    resp = await client.post(
        "/ingest/hl7v2", content=adt(), headers={**bearer(token_for("INTEGRATION")), "Content-Type": "text/plain"}
    )
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["topic"] == runtime.settings.topics.adt and body["offset"] == 0
    tasks = await eventually(lambda: tasks_over_http(client, token_for("PMC")))
    assert [t["triggering_event_ids"] for t in tasks] == [[body["event_id"]]]


async def test_redelivery_creates_no_second_task(
    runtime: Runtime, settings: Settings, client: httpx.AsyncClient, token_for: Callable[..., str], db: AsyncEngine
) -> None:
    message = adt().encode()
    await produce(settings, message, message, message)
    # The same discharge resent under a new control id is the same visit: still one task.
    await produce(settings, adt(control_id="MSG-0001-RESENT").encode())
    await eventually(lambda: _committed_to_end(runtime))
    assert await count(db, Task) == 1
    assert await count(db, InboundEvent) == 2
    assert await count(db, Encounter) == 1 and await count(db, Patient) == 1

    # A whole-topic redelivery (a new consumer group re-reads from offset 0) changes nothing.
    replay = settings.model_copy(update={"consumer_group": settings.consumer_group + "-replay"})
    async with Runtime(replay) as second:
        await wait_until_assigned(second)
        await eventually(lambda: _committed_to_end(second))
    assert await count(db, Task) == 1
    assert await count(db, InboundEvent) == 2
    tasks = await tasks_over_http(client, token_for("PMC"))
    assert len(tasks) == 1


async def _committed_to_end(runtime: Runtime) -> bool:
    return all([await c.caught_up() for c in runtime.consumers])


async def test_garbage_is_dead_lettered_and_consumer_keeps_going(
    runtime: Runtime, settings: Settings, client: httpx.AsyncClient, token_for: Callable[..., str], db: AsyncEngine
) -> None:
    key = b"same-partition"
    await produce(settings, b"\x00\xffnot hl7 at all", adt(control_id="").encode(), adt().encode(), key=key)

    tasks = await eventually(lambda: tasks_over_http(client, token_for("PMC")))
    assert len(tasks) == 1, "the valid message after two bad ones was applied"
    async with db.connect() as conn:
        rejected = (await conn.execute(select(RejectedEvent).order_by(RejectedEvent.offset))).all()
    assert [(r.offset, r.field) for r in rejected] == [(0, "MSH-18"), (1, "MSH-10")]
    assert "MSH-10 is required" in rejected[1].reason
    assert rejected[1].topic == settings.topics.adt and rejected[1].status == "open"

    dlq = KafkaConnection.from_settings(settings).consumer(
        settings.topics.adt_dead_letter,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await dlq.start()
    try:
        batch = await dlq.getmany(timeout_ms=5000)
        records = [r for rs in batch.values() for r in rs]
        while len(records) < 2:
            more = await dlq.getmany(timeout_ms=5000)
            assert more, "dead letters did not arrive"
            records += [r for rs in more.values() for r in rs]
    finally:
        await dlq.stop()
    headers = [dict(r.headers) for r in sorted(records, key=lambda r: int(dict(r.headers)["carecoord-source-offset"]))]
    assert [h["carecoord-field"] for h in headers] == [b"MSH-18", b"MSH-10"]
    assert headers[1]["carecoord-source-topic"] == settings.topics.adt.encode()
    assert records[0].key == key

    # Offsets were committed past all three: nothing is re-read after a restart.
    assert await eventually(lambda: _committed_to_end(runtime))


async def test_non_inpatient_and_deceased_discharges_raise_no_task(
    runtime: Runtime, settings: Settings, db: AsyncEngine
) -> None:
    await produce(
        settings,
        adt(control_id="E1", patient_class="E", visit_number="V-ED").encode(),
        adt(control_id="D1", mrn="MRN999", death_indicator="Y", visit_number="V-DEAD").encode(),
        adt("A01", control_id="A1", mrn="MRN777", visit_number="V-ADM").encode(),
    )
    await eventually(lambda: _count_is(db, InboundEvent, 3))
    assert await count(db, Task) == 0
    async with db.connect() as conn:
        deceased = await conn.scalar(select(func.count()).select_from(Patient).where(Patient.deceased.is_(True)))
    assert deceased == 1


async def _count_is(db: AsyncEngine, model: type, n: int) -> bool:
    return await count(db, model) == n


async def test_tasks_are_sorted_by_due_and_scoped_by_role(
    runtime: Runtime, settings: Settings, client: httpx.AsyncClient, token_for: Callable[..., str], db: AsyncEngine
) -> None:
    await produce(
        settings,
        adt(control_id="L", mrn="MRN-LATE", visit_number="V-L", discharge_time="20261122090000-0500").encode(),
        adt(control_id="E", mrn="MRN-EARLY", visit_number="V-E", discharge_time="20261118090000-0500").encode(),
    )
    pmc = token_for("PMC")
    tasks = await eventually(lambda: _n_tasks(client, pmc, 2))
    assert [t["due_at"] for t in tasks] == ["2026-11-25T14:00:00Z", "2026-11-29T14:00:00Z"]

    # No token, a bad token, another role's queue: clear problem+json errors.
    assert (await client.get("/tasks")).status_code == 401
    bad = await client.get("/tasks", headers=bearer("not-a-jwt"))
    assert bad.status_code == 401 and bad.headers["content-type"] == "application/problem+json"
    forbidden = await client.get("/tasks", params={"role": "RN"}, headers=bearer(pmc))
    assert forbidden.status_code == 403 and forbidden.json()["field"] == "role"
    invalid = await client.get("/tasks", params={"status": "bogus"}, headers=bearer(pmc))
    assert invalid.status_code == 422 and invalid.json()["field"] == "status"
    # An RN sees an empty queue; a supervisor may read the PMC queue.
    assert await tasks_over_http(client, token_for("RN")) == []
    assert len(await tasks_over_http(client, token_for("SUPERVISOR"), role="PMC")) == 2
    assert await tasks_over_http(client, pmc, status="completed") == []

    # Every read of patient data is audited, with the patients it showed.
    async with db.connect() as conn:
        audits = (await conn.execute(select(AuditEvent).where(AuditEvent.action == "R"))).all()
    assert any(len(a.patient_ids) == 2 and a.actor == "tester" for a in audits)


async def _n_tasks(client: httpx.AsyncClient, token: str, n: int) -> list[dict] | None:
    tasks = await tasks_over_http(client, token)
    return tasks if len(tasks) == n else None


async def test_ingest_rejects_bad_requests_clearly(client: httpx.AsyncClient, token_for: Callable[..., str]) -> None:
    feed = bearer(token_for("INTEGRATION"))
    garbage = await client.post("/ingest/hl7v2", content="hello", headers={**feed, "Content-Type": "text/plain"})
    assert garbage.status_code == 400
    assert garbage.headers["content-type"] == "application/problem+json"
    assert garbage.json()["field"] == "MSH"
    no_pid = "\r".join(s for s in adt().split("\r") if not s.startswith("PID"))
    missing = await client.post("/ingest/hl7v2", content=no_pid, headers={**feed, "Content-Type": "text/plain"})
    assert missing.status_code == 400 and missing.json()["field"] == "PID"
    wrong_type = await client.post("/ingest/hl7v2", content=adt(), headers={**feed, "Content-Type": "application/json"})
    assert wrong_type.status_code == 415
    not_a_feed = await client.post(
        "/ingest/hl7v2", content=adt(), headers={**bearer(token_for("PMC")), "Content-Type": "text/plain"}
    )
    assert not_a_feed.status_code == 403
    assert (await client.post("/ingest/hl7v2", content=adt())).status_code == 401


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": True, "broker": True, "consumers": True}


async def test_readiness_reports_an_unreachable_database(runtime: Runtime, client: httpx.AsyncClient) -> None:
    real = runtime.engine
    runtime.engine = create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/nowhere")
    try:
        resp = await client.get("/readyz")
    finally:
        await runtime.engine.dispose()
        runtime.engine = real
    assert resp.status_code == 503
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["checks"]["database"] is False


async def _n_part2(db: AsyncEngine) -> bool:
    async with db.connect() as conn:
        return (await conn.execute(select(Task.id).where(Task.part2.is_(True)))).first() is not None


async def test_tasks_of_part2_encounters_need_the_part2_role(
    runtime: Runtime, settings: Settings, client: httpx.AsyncClient, token_for: Callable[..., str], db: AsyncEngine
) -> None:
    await produce(
        settings,
        adt(control_id="SUD", mrn="M-SUD", visit_number="V-SUD", diagnoses=(("F10.20", "I10"),)).encode(),
        adt(control_id="MED", mrn="M-MED", visit_number="V-MED").encode(),
        key=b"k",
    )
    # The SUD stay is behavioural health: its contact goes to the BHCF queue. Its task is labelled
    # Part 2, so it needs the Part 2 role and the patient's recorded consent (docs/security.md).
    assert await eventually(lambda: _n_part2(db))
    async with db.connect() as conn:
        visits = dict((await conn.execute(select(Encounter.id, Encounter.visit_number))).all())
        sud_patient = (
            await conn.execute(select(Encounter.patient_id).where(Encounter.visit_number == "V-SUD"))
        ).scalar()
    assert await eventually(lambda: _n_tasks(client, token_for("PMC", "BHCF", "PART2"), 1))  # no consent yet
    await record_consent(db, sud_patient)
    assert await eventually(lambda: _n_tasks(client, token_for("PMC", "BHCF", "PART2"), 2))
    visible = await tasks_over_http(client, token_for("PMC", "BHCF"))
    assert [visits[uuid.UUID(t["encounter_id"])] for t in visible] == ["V-MED"]
