"""FHIR clinical resources over the real broker into the real database: screenings from Observations
and QuestionnaireResponses, Encounters in the same state as ADT, dead letters, read-back."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import (
    AuditEvent,
    Encounter,
    FhirResource,
    InboundEvent,
    Patient,
    PatientIdentifier,
    QuestionnaireDefinitionRow,
    RejectedEvent,
    ScreeningEvent,
    Task,
)
from app.messaging.kafka_clients import KafkaConnection
from app.runtime import Runtime
from app.settings import Settings
from tests.access_builder import in_scope
from tests.conftest import bearer, eventually
from tests.fhir_builder import MRN_SYSTEM, encode, fixture, observation, phq9_response, subject, transaction
from tests.hl7_builder import adt
from tests.integration.test_adt_pipeline import produce

FHIR_JSON = "application/fhir+json"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The hospital's ADT feed names its MRN authority GOODHEALTH; its FHIR side uses MRN_SYSTEM."""
    return settings.model_copy(update={"assigning_authority_systems": {"GOODHEALTH": MRN_SYSTEM}})


async def produce_fhir(settings: Settings, *payloads: bytes) -> None:
    producer = KafkaConnection.from_settings(settings).producer()
    await producer.start()
    try:
        for payload in payloads:
            await producer.send_and_wait(settings.topics.fhir, payload)
    finally:
        await producer.stop()


async def rows(db: AsyncEngine, model: type, *where: Any) -> list:
    async with db.connect() as conn:
        return list((await conn.execute(select(model).where(*where))).all())


async def n_rows(db: AsyncEngine, model: type, n: int, *where: Any) -> list | None:
    found = await rows(db, model, *where)
    return found if len(found) == n else None


async def caught_up(runtime: Runtime) -> bool:
    return all([await c.caught_up() for c in runtime.consumers])


async def post(client: httpx.AsyncClient, token: str, path: str, resource: dict[str, Any] | bytes) -> httpx.Response:
    body = resource if isinstance(resource, bytes) else encode(resource)
    return await client.post(path, content=body, headers={**bearer(token), "Content-Type": FHIR_JSON})


async def patient_id_for(db: AsyncEngine, mrn: str) -> uuid.UUID | None:
    found = await rows(db, PatientIdentifier, PatientIdentifier.system == MRN_SYSTEM, PatientIdentifier.value == mrn)
    return found[0].patient_id if found else None


async def screenings(client: httpx.AsyncClient, token: str, patient_id: uuid.UUID, n: int) -> list[dict] | None:
    response = await client.get(f"/patients/{patient_id}/screenings", headers=bearer(token))
    assert response.status_code == 200, response.text
    found = response.json()["screenings"]
    return found if len(found) == n else None


async def test_phq9_as_observation_or_as_response_without_total_is_the_same_positive_screen(
    client: httpx.AsyncClient, db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    feed, reader = token_for("INTEGRATION", sub="ehr"), token_for("BHCF")
    assert (await post(client, feed, "/fhir/Questionnaire", fixture("questionnaire-phq9"))).status_code == 202
    assert await eventually(lambda: n_rows(db, FhirResource, 1))
    by_obs = await post(client, feed, "/fhir/Observation", fixture("observation-phq9-total"))
    assert by_obs.status_code == 202, by_obs.text
    assert by_obs.headers["content-type"].startswith(FHIR_JSON)
    assert by_obs.json()["issue"][0]["severity"] == "information"
    by_qr = await post(client, feed, "/fhir/QuestionnaireResponse", phq9_response(mrn="MRN-SCREEN-2"))
    assert by_qr.status_code == 202, by_qr.text

    events = await eventually(lambda: n_rows(db, ScreeningEvent, 2))
    assert events
    first, second = await patient_id_for(db, "MRN-SCREEN-1"), await patient_id_for(db, "MRN-SCREEN-2")
    assert first and second and first != second
    for patient in (first, second):  # screenings are read by care roles with the patient in scope
        await in_scope(db, patient, "BHCF")
    [from_obs] = await eventually(lambda: screenings(client, reader, first, 1)) or [None]
    [from_qr] = await eventually(lambda: screenings(client, reader, second, 1)) or [None]
    for event in (from_obs, from_qr):
        assert (event["instrument"], event["score"], event["positive"], event["threshold"], event["status"]) == (
            "PHQ-9",
            14,
            True,
            10,
            "active",
        )
        assert event["effective_at"] == "2026-11-20T15:15:00Z"
    assert from_obs["source"].startswith("Observation/") and not from_obs["score_computed"]
    assert from_qr["source"].startswith("QuestionnaireResponse/") and from_qr["score_computed"]
    assert from_qr["item9_score"] == 1 and from_obs["item9_score"] is None
    # Unknown patients were created, unattributed: nothing else about them, and no tasks.
    assert await rows(db, Task, Task.rule_id != "test") == []  # (but the scope tasks above)
    audits = await rows(db, AuditEvent, AuditEvent.resource_type == "ScreeningEvent")
    assert {tuple(a.patient_ids) for a in audits} == {(str(first),), (str(second),)}


@pytest.mark.parametrize(
    ("code", "value", "sex", "instrument", "positive", "threshold"),
    [
        ("44261-6", {"valueInteger": 9}, None, "PHQ-9", False, 10),
        ("55758-7", {"valueInteger": 3}, None, "PHQ-2", True, 3),
        ("70274-6", {"valueQuantity": {"value": 10, "unit": "{score}"}}, None, "GAD-7", True, 10),
        ("75626-2", {"valueInteger": 3}, "female", "AUDIT-C", True, 3),
        ("75626-2", {"valueInteger": 3}, "male", "AUDIT-C", False, 4),
        ("44260-8", {"valueInteger": 1}, None, "PHQ-9 item 9", True, 1),
    ],
)
async def test_observations_on_the_topic_are_judged_by_the_configured_thresholds(
    runtime: Runtime,
    settings: Settings,
    db: AsyncEngine,
    code: str,
    value: dict[str, Any],
    sex: str | None,
    instrument: str,
    positive: bool,
    threshold: int,
) -> None:
    obs = observation(code, value=value)
    if sex:  # the Patient travels with the result, as a transaction Bundle entry
        obs["subject"] = {"reference": "urn:uuid:5f0c7a1e-0000-4000-8000-000000000001"}
        payload = transaction(obs)
        payload["entry"].insert(
            0,
            {
                "fullUrl": "urn:uuid:5f0c7a1e-0000-4000-8000-000000000001",
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": MRN_SYSTEM, "value": "MRN-SCREEN-1"}],
                    "gender": sex,
                },
            },
        )
    else:
        payload = obs
    await produce_fhir(settings, encode(payload))
    [event] = await eventually(lambda: n_rows(db, ScreeningEvent, 1)) or [None]
    assert (event.instrument, event.positive, event.threshold) == (instrument, positive, threshold)
    assert event.item9_score == (1 if code == "44260-8" else None)


async def test_amended_then_entered_in_error_updates_then_retracts_one_event(
    runtime: Runtime, settings: Settings, db: AsyncEngine, client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    await produce_fhir(settings, encode(observation(value={"valueInteger": 14})))
    assert await eventually(lambda: n_rows(db, ScreeningEvent, 1, ScreeningEvent.positive.is_(True)))
    await produce_fhir(settings, encode(observation(status="amended", value={"valueInteger": 8})))
    [amended] = await eventually(lambda: n_rows(db, ScreeningEvent, 1, ScreeningEvent.source_version == 2)) or [None]
    assert (amended.score, amended.positive, amended.status) == (8, False, "active")
    retraction = observation(status="entered-in-error", value={"valueInteger": 8})
    await produce_fhir(settings, encode(retraction))
    [gone] = await eventually(lambda: n_rows(db, ScreeningEvent, 1, ScreeningEvent.status == "retracted")) or [None]
    assert gone.source_version == 3 and gone.id == amended.id
    # The stored Observation is the latest version, under one id.
    patient = await patient_id_for(db, "MRN-SCREEN-1")
    assert patient
    await in_scope(db, patient, "PMC")
    found = await client.get(f"/fhir/Observation?patient=Patient/{patient}", headers=bearer(token_for("PMC")))
    assert found.status_code == 200
    bundle = found.json()
    assert bundle["total"] == 1
    resource = bundle["entry"][0]["resource"]
    assert resource["status"] == "entered-in-error" and resource["meta"]["versionId"] == "3"


async def test_duplicate_resend_is_applied_once(runtime: Runtime, settings: Settings, db: AsyncEngine) -> None:
    payload = encode(fixture("observation-phq9-total"))
    # The same Observation again (a new sender-side id and meta do not make it new), and in a Bundle.
    resent = fixture("observation-phq9-total") | {"id": "another-id", "meta": {"lastUpdated": "2026-11-21T00:00:00Z"}}
    await produce_fhir(settings, payload, payload, encode(resent), encode(transaction(resent)))
    assert await eventually(lambda: caught_up(runtime))
    assert len(await rows(db, ScreeningEvent)) == 1
    assert len(await rows(db, FhirResource)) == 1
    assert len(await rows(db, InboundEvent)) == 1
    assert len(await rows(db, Patient)) == 1
    assert await rows(db, RejectedEvent) == []


async def test_invalid_resources_are_refused_with_an_operation_outcome_naming_the_element(
    client: httpx.AsyncClient, db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    feed = token_for("INTEGRATION")
    phq9 = fixture("observation-phq9-total")
    cases: list[tuple[str, dict[str, Any] | bytes, int, str]] = [
        ("/fhir/Observation", b'{"resourceType": "Observation", ', 400, "Observation"),
        ("/fhir/Observation", {"resourceType": "Patient", "id": "x"}, 400, "resourceType"),
        ("/fhir/Observation", fixture("encounter-inpatient-finished"), 400, "resourceType"),
        ("/fhir/Observation", phq9 | {"status": "done"}, 400, "Observation.status"),
        ("/fhir/Observation", phq9 | {"effectiveDateTime": "2026-13-01"}, 400, "Observation.effectiveDateTime"),
        ("/fhir/Observation", observation("8867-4", value={"valueInteger": 60}), 422, "Observation.code"),
        ("/fhir/Observation", observation(value={"valueString": "14"}), 422, "Observation.valueString"),
        (
            "/fhir/Observation",
            observation(value={"valueQuantity": {"value": 14, "system": "http://unitsofmeasure.org", "code": "mg"}}),
            422,
            "Observation.valueQuantity.code",
        ),
        ("/fhir/Observation", observation(value={"valueInteger": 28}), 422, "Observation.value"),
        ("/fhir/Observation", {k: v for k, v in phq9.items() if k != "subject"}, 422, "Observation.subject"),
        (
            "/fhir/QuestionnaireResponse",
            {**phq9_response(), "questionnaire": None},
            422,
            "QuestionnaireResponse.questionnaire",
        ),
        ("/fhir", {"resourceType": "Bundle", "type": "searchset", "entry": []}, 400, "Bundle.type"),
        ("/fhir", observation(), 400, "resourceType"),
    ]
    incomplete = phq9_response()
    del incomplete["item"][0]["item"][8]  # item 9 unanswered and no total: no score
    cases.append(
        ("/fhir", transaction(fixture("questionnaire-phq9"), incomplete), 422, "Bundle.entry[1].resource.item")
    )
    for path, body, status, expression in cases:
        response = await post(client, feed, path, body)
        assert response.status_code == status, (path, expression, response.text)
        assert response.headers["content-type"].startswith(FHIR_JSON)
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["expression"] == [expression], (expression, outcome)
    assert (await client.post("/fhir/Observation", content=encode(phq9), headers=bearer(feed))).status_code == 415
    assert (await post(client, token_for("PMC"), "/fhir/Observation", phq9)).status_code == 403
    unauthenticated = await client.post("/fhir/Observation", content=encode(phq9), headers={"Content-Type": FHIR_JSON})
    assert unauthenticated.status_code == 401 and unauthenticated.json()["resourceType"] == "OperationOutcome"
    assert await rows(db, FhirResource) == []


async def test_the_front_door_also_refuses_what_the_database_shows_to_be_unusable(
    client: httpx.AsyncClient, db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    feed = token_for("INTEGRATION")
    assert (await post(client, feed, "/fhir/Questionnaire", fixture("questionnaire-phq9"))).status_code == 202
    assert await eventually(lambda: n_rows(db, QuestionnaireDefinitionRow, 1))
    incomplete = phq9_response()
    incomplete["item"][0]["item"][4]["answer"][0]["valueCoding"]["code"] = "LA-UNKNOWN"
    refused = await post(client, feed, "/fhir/QuestionnaireResponse", incomplete)
    assert refused.status_code == 422, refused.text
    assert refused.json()["issue"][0]["expression"] == ["QuestionnaireResponse.item[0].item[4].answer[0].valueCoding"]
    stranger = observation() | {"subject": {"reference": f"Patient/{uuid.uuid4()}"}}
    refused = await post(client, feed, "/fhir/Observation", stranger)
    assert refused.status_code == 422 and refused.json()["issue"][0]["expression"] == ["Observation.subject"]
    assert len(await rows(db, FhirResource)) == 1 and await rows(db, Patient) == []


async def test_unusable_payloads_on_the_topic_are_dead_lettered_with_the_element_path(
    runtime: Runtime,
    settings: Settings,
    db: AsyncEngine,
    client: httpx.AsyncClient,
    token_for: Callable[..., str],
) -> None:
    bad = [
        b"\x00\xff not json",
        encode({"resourceType": "Medication"}),
        encode(observation("8867-4", value={"valueInteger": 60})),
        encode(observation() | {"subject": {"reference": f"Patient/{uuid.uuid4()}"}}),
        encode(observation(ident="OK-1")),  # a good one after them still applies
    ]
    await produce_fhir(settings, *bad)
    rejected = await eventually(lambda: n_rows(db, RejectedEvent, 4))
    assert rejected
    fields = sorted(r.field or "" for r in rejected)
    assert fields == ["Observation.code", "Observation.subject", "resource", "resourceType"]
    assert all(r.source == "fhir" and r.topic == settings.topics.fhir for r in rejected)
    unknown = next(r for r in rejected if r.field == "Observation.code")
    # the code is a field value: withheld from the listed reason (app/state/value_free.py), kept in the payload
    assert "unsupported Observation.code (http://loinc.org|(value withheld))" in unknown.reason
    assert await eventually(lambda: n_rows(db, ScreeningEvent, 1))

    consumer = KafkaConnection.from_settings(settings).consumer(
        settings.topics.fhir_dead_letter,
        auto_offset_reset="earliest",
        group_id=f"dlq-reader-{uuid.uuid4().hex[:6]}",
    )
    await consumer.start()
    try:
        copies: list = []
        while len(copies) < 4:
            batch = await consumer.getmany(timeout_ms=5000)
            assert batch, "dead letters did not arrive"
            copies += [m for msgs in batch.values() for m in msgs]
    finally:
        await consumer.stop()
    headers = [dict(m.headers) for m in copies]
    assert sorted(h["carecoord-field"].decode() for h in headers) == fields
    # Replaying one runs it through the FHIR handler again: still refused, with the same element.
    admin = {"Authorization": f"Bearer {token_for('ADMIN')}"}
    replay = await client.post(f"/admin/dead-letters/{unknown.id}/replay", headers=admin)
    assert replay.status_code == 409 and replay.json()["field"] == "Observation.code"


async def test_a_response_that_comes_before_its_questionnaire_is_scored_when_the_questionnaire_arrives(
    runtime: Runtime,
    settings: Settings,
    db: AsyncEngine,
    client: httpx.AsyncClient,
    token_for: Callable[..., str],
) -> None:
    unscorable = phq9_response(mrn="MRN-SCREEN-2", ident="QR-0002")
    del unscorable["item"][0]["item"][3]  # item 4 unanswered and no total
    await produce_fhir(settings, encode(phq9_response()), encode(unscorable))
    waiting = await eventually(lambda: n_rows(db, FhirResource, 2, FhirResource.awaiting_questionnaire.is_not(None)))
    assert waiting and await rows(db, ScreeningEvent) == [] and await rows(db, RejectedEvent) == []

    assert (
        await post(client, token_for("INTEGRATION"), "/fhir/Questionnaire", fixture("questionnaire-phq9"))
    ).status_code == 202
    [event] = await eventually(lambda: n_rows(db, ScreeningEvent, 1)) or [None]
    assert (event.score, event.positive, event.item9_score, event.score_computed) == (14, True, 1, True)
    # The one the form cannot score keeps waiting, and is listed for an administrator.
    [row] = await eventually(lambda: n_rows(db, RejectedEvent, 1)) or [None]
    assert (row.source, row.field, row.topic) == ("fhir-scoring", "QuestionnaireResponse.item", None)
    assert "44254-1" in row.reason
    [still] = await rows(db, FhirResource, FhirResource.awaiting_questionnaire.is_not(None))
    assert still.content["identifier"]["value"] == "QR-0002"


async def test_fhir_encounter_and_adt_describe_one_visit(
    runtime: Runtime, settings: Settings, db: AsyncEngine, client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    await produce(settings, adt("A01", control_id="ADM-1", event_time="20261115083000-0500").encode())
    assert await eventually(lambda: n_rows(db, Encounter, 1, Encounter.status == "in-progress"))
    response = await post(client, token_for("INTEGRATION"), "/fhir/Encounter", fixture("encounter-inpatient-finished"))
    assert response.status_code == 202, response.text
    [encounter] = await eventually(lambda: n_rows(db, Encounter, 1, Encounter.status == "finished")) or [None]
    assert (encounter.facility, encounter.visit_number, encounter.class_code) == ("GOODHEALTH", "V0001", "IMP")
    assert encounter.discharge_at.isoformat() == "2026-11-20T19:00:00+00:00"
    assert len(await rows(db, Patient)) == 1
    # The FHIR discharge runs the same rules as an ADT A03: one post-discharge task.
    [task] = await eventually(lambda: n_rows(db, Task, 1)) or [None]
    assert task.rule_id == "post-discharge-contact" and task.encounter_id == encounter.id
    # A later ADT A03 for the same visit is the same discharge: still one encounter, one task.
    await produce(settings, adt("A03", control_id="DIS-1", discharge_time="20261120140000-0500").encode())
    assert await eventually(lambda: n_rows(db, InboundEvent, 3))
    assert len(await rows(db, Encounter)) == 1 and len(await rows(db, Task)) == 1


async def test_search_reads_back_what_was_stored(
    client: httpx.AsyncClient, db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    feed, reader = token_for("INTEGRATION"), token_for("BHCF")
    bundle = transaction(
        fixture("questionnaire-phq9"),
        phq9_response(),
        observation(ident="O-1"),
        observation("70274-6", ident="O-2", value={"valueInteger": 4}),
    )
    assert (await post(client, feed, "/fhir", bundle)).status_code == 202
    assert await eventually(lambda: n_rows(db, ScreeningEvent, 3))
    patient = await patient_id_for(db, "MRN-SCREEN-1")
    assert patient
    await in_scope(db, patient, "BHCF")

    async def search(query: str) -> dict[str, Any]:
        response = await client.get(query, headers=bearer(reader))
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith(FHIR_JSON)
        return response.json()

    everything = await search(f"/fhir/Observation?patient={patient}")
    assert everything["type"] == "searchset" and everything["total"] == 2
    phq9 = await search(f"/fhir/Observation?patient={patient}&code=http://loinc.org|44261-6")
    assert [e["resource"]["identifier"][0]["value"] for e in phq9["entry"]] == ["O-1"]
    assert (await search(f"/fhir/Observation?patient={patient}&code=70274-6,55758-7"))["total"] == 1
    assert (await search(f"/fhir/Observation?patient={patient}&code=http://snomed.info/sct|44261-6"))["total"] == 0
    assert (await search(f"/fhir/Observation?patient={uuid.uuid4()}"))["total"] == 0
    responses = await search(f"/fhir/QuestionnaireResponse?patient=Patient/{patient}")
    assert responses["total"] == 1
    stored = responses["entry"][0]["resource"]
    assert stored["questionnaire"] == phq9_response()["questionnaire"] and stored["meta"]["versionId"] == "1"
    missing = await client.get("/fhir/Observation", headers=bearer(reader))
    assert missing.status_code == 400 and missing.json()["issue"][0]["expression"] == ["patient"]
    assert (await client.get(f"/fhir/Observation?patient={patient}")).status_code == 401
    reads = await rows(db, AuditEvent, AuditEvent.resource_type == "Observation", AuditEvent.action == "R")
    assert reads and [str(patient)] in [a.patient_ids for a in reads]


async def test_subject_by_carecoord_patient_id(
    runtime: Runtime, settings: Settings, db: AsyncEngine, client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    await produce_fhir(settings, encode(observation(ident="FIRST")))
    assert await eventually(lambda: n_rows(db, ScreeningEvent, 1))
    patient = await patient_id_for(db, "MRN-SCREEN-1")
    again = observation("70274-6", ident="SECOND", value={"valueInteger": 12})
    again["subject"] = {"reference": f"Patient/{patient}"}
    assert (await post(client, token_for("INTEGRATION"), "/fhir/Observation", again)).status_code == 202
    assert await eventually(lambda: n_rows(db, ScreeningEvent, 2, ScreeningEvent.patient_id == patient))
    nobody = observation(ident="THIRD")
    nobody["subject"] = {"reference": f"Patient/{uuid.uuid4()}"}
    await produce_fhir(settings, json.dumps(nobody).encode())
    [row] = await eventually(lambda: n_rows(db, RejectedEvent, 1)) or [None]
    assert row.field == "Observation.subject" and "is not known" in row.reason
    assert subject("x")["identifier"]["system"] == MRN_SYSTEM


async def test_a_merge_moves_screenings_to_the_surviving_patient(
    runtime: Runtime, settings: Settings, db: AsyncEngine, client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    await produce_fhir(settings, encode(observation(mrn="OLD-1")))
    assert await eventually(lambda: n_rows(db, ScreeningEvent, 1))
    merge = adt("A40", control_id="A40", mrn="NEW-1", prior_mrn="OLD-1", include_pv1=False)
    await produce(settings, merge.encode())
    survivor = await eventually(lambda: patient_id_for(db, "NEW-1"))
    assert survivor
    assert await eventually(lambda: n_rows(db, ScreeningEvent, 1, ScreeningEvent.patient_id == survivor))
    [stored] = await rows(db, FhirResource)
    assert stored.patient_id == survivor
    await in_scope(db, survivor, "BHCF")
    listed = await screenings(client, token_for("BHCF"), survivor, 1)
    assert listed and listed[0]["score"] == 14
