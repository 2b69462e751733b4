"""Da Vinci notification Bundles over the real broker into the real database: the ENS topic and
POST /fhir/$process-message produce the same encounter and tasks as HL7 v2 ADT."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import AuditEvent, Encounter, InboundEvent, Patient, RejectedEvent, Task
from app.messaging.kafka_clients import KafkaConnection
from app.messaging.keys import patient_partition_key
from app.runtime import Runtime
from app.settings import Settings
from tests.conftest import bearer, eventually
from tests.hl7_builder import adt
from tests.integration.test_adt_pipeline import count, produce, tasks_over_http

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "samples" / "fhir"
FHIR_JSON = "application/fhir+json"
PATH = "/fhir/$process-message"
PID_SYSTEM = "http://example.org/fhir/pid"
MRN_SYSTEM = "http://example.org/fhir/mrn"
PATIENT_ID = "06e1f0dd-5fbe-4480-9bb4-6b54ec02d31b"
VISIT = "Elden718Halvorson12420181021T2122150700"
NPI = "9941339100"  # the sample's serviceProvider Organization
# The discharge sample: Encounter.period.end 2018-10-23T22:22:15-07:00 = 2018-10-24T05:22:15Z; the task
# is due 7 calendar days later on the facility clock (America/New_York, still EDT on 2018-10-31).
DISCHARGED = datetime(2018, 10, 24, 5, 22, 15, tzinfo=UTC)
DUE = "2018-10-31T05:22:15Z"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared settings plus fresh ENS topics, and the MRN authority the ADT side of this hospital uses."""
    suffix = uuid.uuid4().hex[:8]
    topics = settings.topics.model_copy(update={"ens": f"ens-{suffix}", "ens_dead_letter": f"ens-dlq-{suffix}"})
    return settings.model_copy(update={"topics": topics, "assigning_authority_systems": {"HOLYFAM": MRN_SYSTEM}})


def sample(kind: str) -> dict[str, Any]:
    return json.loads((SAMPLES / f"davinci-{kind}-notification-message-bundle-01.json").read_text(encoding="utf-8"))


def encode(bundle: dict[str, Any]) -> bytes:
    return json.dumps(bundle).encode()


async def produce_ens(settings: Settings, *payloads: bytes, key: bytes | None = None) -> None:
    """Publish as an ENS intermediary's integration engine would: straight to the ENS topic."""
    producer = KafkaConnection.from_settings(settings).producer()
    await producer.start()
    try:
        for payload in payloads:
            await producer.send_and_wait(settings.topics.ens, payload, key=key)
    finally:
        await producer.stop()


async def caught_up(runtime: Runtime) -> bool:
    return all([await c.caught_up() for c in runtime.consumers])


async def rows(db: AsyncEngine, model: type) -> list:
    async with db.connect() as conn:
        return list((await conn.execute(select(model))).all())


async def n_rows(db: AsyncEngine, model: type, n: int) -> list | None:
    found = await rows(db, model)
    return found if len(found) == n else None


PATIENT_KEY = patient_partition_key(PID_SYSTEM, PATIENT_ID)


async def test_discharge_bundle_on_the_ens_topic_becomes_a_task(
    runtime: Runtime, settings: Settings, client: httpx.AsyncClient, token_for: Callable[..., str], db: AsyncEngine
) -> None:
    # The sample is an inpatient (IMP) encounter, finished, routine disposition: the rule applies as sent.
    await produce_ens(settings, encode(sample("discharge")), key=PATIENT_KEY)

    tasks = await eventually(lambda: tasks_over_http(client, token_for("PMC"), role="PMC"))
    assert len(tasks) == 1
    task = tasks[0]
    assert task["type"] == "post-discharge-contact" and task["status"] == "ready"
    assert task["due_at"] == DUE and task["due_basis"]["anchor"] == "discharge"
    assert task["patient"]["name"] == "Elden718 Halvorson124"

    [event] = await rows(db, InboundEvent)
    [encounter] = await rows(db, Encounter)
    assert task["triggering_event_ids"] == [str(event.id)]
    assert (event.source, event.message_type, event.message_identity, event.topic) == (
        "davinci",
        "notification-discharge",
        "davinci|discharge-notification-message-bundle-01",
        settings.topics.ens,
    )
    assert (encounter.facility, encounter.visit_number) == (NPI, VISIT)
    assert (encounter.status, encounter.class_code, encounter.discharge_disposition) == ("finished", "IMP", "01")
    assert encounter.discharge_at == DISCHARGED


async def test_admit_transfer_discharge_samples_fold_into_one_finished_encounter(
    runtime: Runtime, settings: Settings, db: AsyncEngine
) -> None:
    await produce_ens(settings, *(encode(sample(k)) for k in ("admit", "transfer", "discharge")), key=PATIENT_KEY)
    await eventually(lambda: n_rows(db, InboundEvent, 3))
    [encounter] = await rows(db, Encounter)
    assert encounter.status == "finished" and encounter.class_code == "IMP"  # the admit sample said EMER
    assert await count(db, Patient) == 1 and await count(db, Task) == 1


async def test_adt_and_davinci_discharge_of_one_visit_make_one_encounter(
    runtime: Runtime, settings: Settings, client: httpx.AsyncClient, token_for: Callable[..., str], db: AsyncEngine
) -> None:
    """The encounter key is facility + visit number; the patient is matched by identifier. The hospital's
    ADT feed names itself by the NPI its FHIR Organization carries (MSH-4.1), sends the Encounter.identifier
    value as PV1-19, and its MRN authority HOLYFAM maps to the FHIR MRN system (assigning_authority_systems)."""
    a03 = adt(
        control_id="HF-0001",
        facility=NPI,
        mrn=PATIENT_ID,
        authority="HOLYFAM",
        visit_number=VISIT,
        admit_time="20181021212215-0700",
        discharge_time="20181023222215-0700",
        event_time="20181023222500-0700",
        message_time="20181023223000-0700",
    )
    await produce(settings, a03.encode(), key=patient_partition_key(MRN_SYSTEM, PATIENT_ID))
    await eventually(lambda: n_rows(db, InboundEvent, 1))
    await produce_ens(settings, encode(sample("discharge")), key=PATIENT_KEY)
    events = await eventually(lambda: n_rows(db, InboundEvent, 2))
    assert sorted(e.source for e in events) == ["davinci", "hl7v2"]

    [encounter] = await rows(db, Encounter)
    assert (encounter.facility, encounter.visit_number, encounter.status) == (NPI, VISIT, "finished")
    assert encounter.discharge_at == DISCHARGED
    assert {e.encounter_id for e in events} == {encounter.id}
    assert await count(db, Patient) == 1
    tasks = await tasks_over_http(client, token_for("PMC"))
    assert len(tasks) == 1 and tasks[0]["due_at"] == DUE


async def test_process_message_accepts_then_applies_once(
    runtime: Runtime, settings: Settings, client: httpx.AsyncClient, token_for: Callable[..., str], db: AsyncEngine
) -> None:
    feed = {**bearer(token_for("INTEGRATION", sub="ens-feed")), "Content-Type": FHIR_JSON}
    body = encode(sample("discharge"))
    first = await client.post(PATH, content=body, headers=feed)
    assert first.status_code == 202, first.text
    assert first.headers["content-type"] == FHIR_JSON
    outcome = first.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "information" and outcome["issue"][0]["code"] == "informational"
    event_id = first.headers["Carecoord-Event-Id"]
    assert event_id in outcome["issue"][0]["diagnostics"]

    tasks = await eventually(lambda: tasks_over_http(client, token_for("PMC")))
    assert [t["triggering_event_ids"] for t in tasks] == [[event_id]]

    # The same Bundle.id again: accepted (custody taken) with the same event id, applied once.
    again = await client.post(
        PATH, content=body, headers={**feed, "Content-Type": "application/fhir+json; fhirVersion=4.0"}
    )
    assert again.status_code == 202 and again.headers["Carecoord-Event-Id"] == event_id
    assert await eventually(lambda: caught_up(runtime))
    assert await count(db, InboundEvent) == 1 and await count(db, Task) == 1 and await count(db, Encounter) == 1

    async with db.connect() as conn:
        audited = (await conn.execute(select(AuditEvent).where(AuditEvent.resource_type == "Bundle"))).all()
    assert [(a.actor, a.action, a.request) for a in audited] == [("ens-feed", "C", f"POST {PATH} event={event_id}")] * 2

    # Refusals are OperationOutcomes too.
    assert (await client.post(PATH, content=body, headers={"Content-Type": FHIR_JSON})).status_code == 401
    pmc = await client.post(PATH, content=body, headers={**bearer(token_for("PMC")), "Content-Type": FHIR_JSON})
    assert pmc.status_code == 403 and pmc.json()["resourceType"] == "OperationOutcome"
    xml = await client.post(PATH, content=b"<Bundle/>", headers={**feed, "Content-Type": "application/fhir+xml"})
    assert xml.status_code == 415 and xml.json()["issue"][0]["expression"] == ["Content-Type"]


async def test_invalid_bundle_is_refused_over_http_and_dead_lettered_on_the_topic(
    runtime: Runtime, settings: Settings, client: httpx.AsyncClient, token_for: Callable[..., str], db: AsyncEngine
) -> None:
    bad = sample("discharge")
    bad["id"] = "bad-event-code"
    bad["entry"][0]["resource"]["eventCoding"]["code"] = "notification-lab-report"
    feed = {**bearer(token_for("INTEGRATION")), "Content-Type": FHIR_JSON}

    refused = await client.post(PATH, content=encode(bad), headers=feed)
    assert refused.status_code == 400
    assert refused.headers["content-type"] == FHIR_JSON
    issue = refused.json()["issue"][0]
    assert (issue["severity"], issue["code"]) == ("error", "invalid")
    assert issue["expression"] == ["Bundle.entry[0].resource.eventCoding"]
    assert "notification-lab-report" in issue["diagnostics"]
    invalid_fhir = sample("discharge")
    invalid_fhir["entry"][1]["resource"]["period"]["start"] = "yesterday"
    refused = await client.post(PATH, content=encode(invalid_fhir), headers=feed)
    assert refused.status_code == 400
    assert refused.json()["issue"][0]["expression"] == ["Bundle.entry[1].resource.period.start"]
    assert await count(db, InboundEvent) == 0 and await count(db, RejectedEvent) == 0  # refused, not stored

    # Straight on the topic there is nobody to refuse it to: it is set aside, and the next one applied.
    await produce_ens(settings, encode(bad), encode(sample("discharge")), key=b"same-partition")
    await eventually(lambda: tasks_over_http(client, token_for("PMC")))
    [rejected] = await rows(db, RejectedEvent)
    assert (rejected.source, rejected.topic, rejected.offset) == ("davinci", settings.topics.ens, 0)
    assert rejected.field == "Bundle.entry[0].resource.eventCoding" and rejected.status == "open"
    assert rejected.payload == encode(bad)

    dlq = KafkaConnection.from_settings(settings).consumer(
        settings.topics.ens_dead_letter,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await dlq.start()
    try:
        records: list = []
        for _ in range(5):
            batch = await dlq.getmany(timeout_ms=2000)
            records += [r for rs in batch.values() for r in rs]
            if records:
                break
    finally:
        await dlq.stop()
    assert len(records) == 1, "the ENS dead letter did not arrive"
    headers = dict(records[0].headers)
    assert headers["carecoord-field"] == b"Bundle.entry[0].resource.eventCoding"
    assert headers["carecoord-source-topic"] == settings.topics.ens.encode()
    assert records[0].value == encode(bad) and records[0].key == b"same-partition"
    assert await eventually(lambda: caught_up(runtime))


async def test_a_reused_bundle_id_with_other_content_is_applied_and_listed(
    runtime: Runtime, settings: Settings, client: httpx.AsyncClient, token_for: Callable[..., str], db: AsyncEngine
) -> None:
    """Bundle.id is the Da Vinci duplicate-detection key: a resend is a no-op, another message under it is not."""
    bundle = sample("discharge")
    await produce_ens(settings, encode(bundle), encode(bundle), key=PATIENT_KEY)
    assert await eventually(lambda: n_rows(db, InboundEvent, 1))
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "Encounter":
            entry["resource"]["period"]["start"] = "2018-10-20T08:00:00-07:00"  # another stay's admit time
    await produce_ens(settings, encode(bundle), key=PATIENT_KEY)
    events = await eventually(lambda: n_rows(db, InboundEvent, 2))
    assert events and len({e.content_hash for e in events}) == 2
    resp = await client.get("/admin/data-quality", headers=bearer(token_for("ADMIN")))
    assert resp.status_code == 200, resp.text
    [finding] = resp.json()["items"]
    assert (finding["kind"], finding["source"], finding["field"]) == ("control-id-reused", "davinci", "Bundle.id")
