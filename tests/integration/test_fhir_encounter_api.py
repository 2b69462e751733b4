"""FHIR R4 Encounter read/search and CapabilityStatement over HTTP, against the real database.

Most tests seed `encounters` rows directly (exact periods, Part 2 flags); one runs an ADT message
through the real broker and consumer. Every response body is validated with fhir.resources' R4B models.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.encounter import Encounter as FhirEncounter
from fhir.resources.R4B.operationoutcome import OperationOutcome
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.api.app import create_app
from app.db.models import AuditEvent, Encounter, Patient
from app.encounters.sensitivity import BH_LABELS, PART2_LABELS
from app.fhir.search import DATE_PREFIXES
from app.messaging.keys import patient_partition_key
from app.runtime import Runtime
from app.settings import Settings
from tests.access_builder import record_consent, scope_task
from tests.conftest import bearer, eventually
from tests.hl7_builder import adt
from tests.integration.test_adt_pipeline import produce
from tests.unit.test_fhir_search import EXPECTED, PERIODS

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
V2_0004 = "http://terminology.hl7.org/CodeSystem/v2-0004"
FHIR_JSON = "application/fhir+json"
ENCOUNTER_STATUSES = {
    "planned", "arrived", "triaged", "in-progress", "onleave", "finished", "cancelled", "entered-in-error", "unknown",
}  # fmt: skip

TokenFor = Callable[..., str]


async def new_patient(db: AsyncEngine) -> uuid.UUID:
    async with AsyncSession(db) as session, session.begin():
        patient = Patient(family_name="DOE", given_name="JANE")
        session.add(patient)
        await session.flush()
        session.add(scope_task(patient.id))  # in the PMC queue: the patient is in a PMC's scope
        return patient.id


async def seed(db: AsyncEngine, patient_id: uuid.UUID | None = None, **columns: Any) -> Encounter:
    values: dict[str, Any] = {
        "facility": "GOODHEALTH",
        "visit_number": "V" + uuid.uuid4().hex[:8],
        "status": "finished",
        "class_system": ACT_CODE,
        "class_code": "IMP",
        "patient_class": "I",
        "hospital_service": "MED",
        "location": "4W^401^A",
        "discharge_disposition": "01",
        "admit_at": datetime(2026, 11, 15, 13, 30, tzinfo=UTC),
        "discharge_at": datetime(2026, 11, 20, 19, 0, tzinfo=UTC),
        "diagnoses": [],
        "security_labels": [],
    }
    values.update(columns)
    async with AsyncSession(db, expire_on_commit=False) as session, session.begin():
        encounter = Encounter(patient_id=patient_id or await _patient_in(session), **values)
        session.add(encounter)
    return encounter


async def _patient_in(session: AsyncSession) -> uuid.UUID:
    patient = Patient(family_name="DOE")
    session.add(patient)
    await session.flush()
    session.add(scope_task(patient.id))
    return patient.id


async def audits(db: AsyncEngine) -> list[Any]:
    async with db.connect() as conn:
        query = select(AuditEvent).where(AuditEvent.resource_type == "Encounter").order_by(AuditEvent.id)
        return list((await conn.execute(query)).all())


def fhir_json(resp: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(FHIR_JSON)
    return resp.json()


def outcome(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    body = fhir_json(resp, status)
    OperationOutcome.model_validate(body)
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["severity"] == "error" and body["issue"][0]["code"] == code
    return body


def bundle(resp: httpx.Response) -> dict[str, Any]:
    body = fhir_json(resp)
    Bundle.model_validate(body)
    assert body["type"] == "searchset"
    for entry in body.get("entry", []):
        if entry["search"]["mode"] == "match":
            assert entry["resource"]["resourceType"] == "Encounter"
            assert entry["resource"]["status"] in ENCOUNTER_STATUSES
            assert entry["fullUrl"] == f"http://carecoord.test/fhir/Encounter/{entry['resource']['id']}"
    return body


def ids(body: dict[str, Any]) -> set[str]:
    return {e["resource"]["id"] for e in body.get("entry", []) if e["search"]["mode"] == "match"}


async def search(client: httpx.AsyncClient, token: str, params: Any = None, **headers: str) -> httpx.Response:
    return await client.get("/fhir/Encounter", params=params, headers={**bearer(token), **headers})


# --- read -----------------------------------------------------------------------------------------


@pytest.mark.api_only
async def test_read_returns_a_valid_r4_encounter_and_is_audited(
    client: httpx.AsyncClient, token_for: TokenFor, db: AsyncEngine
) -> None:
    encounter = await seed(db, diagnoses=[["I10", "I10"]], security_labels=list(BH_LABELS))
    resp = await client.get(f"/fhir/Encounter/{encounter.id}", headers=bearer(token_for("PMC", sub="pmc-1")))
    body = fhir_json(resp)
    FhirEncounter.model_validate(body)
    assert body["id"] == str(encounter.id)
    assert body["subject"] == {"reference": f"Patient/{encounter.patient_id}"}
    assert body["identifier"][0]["system"] == "urn:carecoord:visit:GOODHEALTH"
    assert body["identifier"][0]["value"] == encounter.visit_number
    assert body["class"]["code"] == "IMP" and body["status"] == "finished"
    assert body["period"] == {"start": "2026-11-15T13:30:00+00:00", "end": "2026-11-20T19:00:00+00:00"}
    assert body["meta"]["security"] == [{"system": ACT_CODE, "code": "PSY"}]
    assert body["meta"]["lastUpdated"].endswith("+00:00")
    assert "last-modified" in resp.headers

    (audit,) = await audits(db)
    assert (audit.actor, audit.action, audit.outcome) == ("pmc-1", "R", "0")
    assert audit.patient_ids == [str(encounter.patient_id)]
    assert audit.request == f"GET /fhir/Encounter/{encounter.id}"


UNKNOWN_ID = "5f0c8a52-2b7e-4d0e-9a57-3c1f1e0b6a01"  # fixed: xdist workers must collect the same test ids


@pytest.mark.api_only
@pytest.mark.parametrize("resource_id", [UNKNOWN_ID, "not-a-uuid", "x" * 80])
async def test_unknown_encounter_is_404_operation_outcome(
    client: httpx.AsyncClient, token_for: TokenFor, db: AsyncEngine, resource_id: str
) -> None:
    resp = await client.get(f"/fhir/Encounter/{resource_id}", headers=bearer(token_for("PMC")))
    outcome(resp, 404, "not-found")
    (audit,) = await audits(db)
    assert audit.outcome == "4" and audit.patient_ids == []


@pytest.mark.api_only
@pytest.mark.parametrize("path", ["/fhir/Encounter", f"/fhir/Encounter/{UNKNOWN_ID}"])
@pytest.mark.parametrize("authorization", [None, "Bearer not-a-jwt", "Basic dXNlcjpwYXNz"])
async def test_401_is_an_operation_outcome(
    client: httpx.AsyncClient, db: AsyncEngine, path: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    resp = await client.get(path, headers=headers)
    outcome(resp, 401, "login")
    assert resp.headers["www-authenticate"].startswith("Bearer")
    assert await audits(db) == []


@pytest.mark.api_only
async def test_a_caller_without_any_role_is_403(
    client: httpx.AsyncClient, token_for: TokenFor, db: AsyncEngine
) -> None:
    encounter = await seed(db)
    outcome(await client.get(f"/fhir/Encounter/{encounter.id}", headers=bearer(token_for())), 403, "forbidden")
    outcome(await search(client, token_for()), 403, "forbidden")


@pytest.mark.api_only
async def test_validation_errors_under_fhir_are_422_operation_outcome(runtime: Runtime) -> None:
    # No Encounter input is validated by FastAPI (search values are parsed by FHIR rules: 400), so
    # a probe route checks that the app renders framework validation errors under /fhir as FHIR.
    app = create_app(runtime=runtime)

    @app.get("/fhir/_probe/{number}")
    async def probe(number: int) -> dict[str, int]:
        return {"number": number}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://carecoord.test") as c:
        body = outcome(await c.get("/fhir/_probe/abc"), 422, "invalid")
    assert body["issue"][0]["expression"] == ["number"]


# --- metadata -------------------------------------------------------------------------------------


@pytest.mark.api_only
async def test_metadata_is_public_and_a_valid_capability_statement(client: httpx.AsyncClient) -> None:
    body = fhir_json(await client.get("/fhir/metadata"))
    CapabilityStatement.model_validate(body)
    assert body["fhirVersion"] == "4.0.1" and body["rest"][0]["mode"] == "server"
    assert body["implementation"]["url"] == "http://carecoord.test/fhir"
    assert [r["type"] for r in body["rest"][0]["resource"]] == [
        "Encounter",
        "Observation",
        "Procedure",
        "DocumentReference",
        "Questionnaire",
        "QuestionnaireResponse",
        "Task",
        "CarePlan",
        "Patient",
        "Consent",
        "AuditEvent",
    ]
    assert [o["name"] for o in body["rest"][0]["operation"]] == ["process-message"]
    services = [c["coding"][0]["code"] for c in body["rest"][0]["security"]["service"]]
    assert services == ["OAuth", "SMART-on-FHIR"]


# --- search ---------------------------------------------------------------------------------------


@pytest.mark.api_only
async def test_search_by_patient_in_every_reference_form(
    client: httpx.AsyncClient, token_for: TokenFor, db: AsyncEngine
) -> None:
    jane, john = await new_patient(db), await new_patient(db)
    mine = {str((await seed(db, jane)).id), str((await seed(db, jane)).id)}
    await seed(db, john)
    token = token_for("PMC", sub="pmc-1")
    for value in (str(jane), f"Patient/{jane}", f"http://carecoord.test/fhir/Patient/{jane}"):
        body = bundle(await search(client, token, {"patient": value}))
        assert body["total"] == 2 and ids(body) == mine
        self_link = body["link"][0]
        assert self_link["relation"] == "self"
        assert parse_qs(urlsplit(self_link["url"]).query)["patient"] == [value]
    # an id carecoord never issued, and OR-ed ids
    assert bundle(await search(client, token, {"patient": "no-such-patient"}))["total"] == 0
    assert bundle(await search(client, token, {"patient": f"{jane},{john}"}))["total"] == 3
    # every search is audited with the patients it returned
    trail = await audits(db)
    assert len(trail) == 5
    assert trail[0].patient_ids == [str(jane)] and trail[0].actor == "pmc-1"
    assert trail[3].patient_ids == []
    assert trail[4].patient_ids == sorted([str(jane), str(john)])


@pytest.mark.api_only
async def test_search_by_status_and_class_tokens(
    client: httpx.AsyncClient, token_for: TokenFor, db: AsyncEngine
) -> None:
    finished_imp = await seed(db, status="finished")
    active_emer = await seed(db, status="in-progress", class_code="EMER", discharge_at=None)
    planned_v2 = await seed(
        db, status="planned", class_system=V2_0004, class_code="B", admit_at=None, discharge_at=None
    )
    no_class = await seed(db, status="unknown", class_system=None, class_code=None)
    token = token_for("PMC")

    async def found(**params: str) -> set[str]:
        return ids(bundle(await search(client, token, params)))

    assert await found(status="finished") == {str(finished_imp.id)}
    assert await found(status="http://hl7.org/fhir/encounter-status|in-progress") == {str(active_emer.id)}
    assert await found(status="http://example.org/other|finished") == set()
    assert await found(status="finished,planned") == {str(finished_imp.id), str(planned_v2.id)}
    assert await found(**{"class": "IMP"}) == {str(finished_imp.id)}
    assert await found(**{"class": f"{ACT_CODE}|EMER"}) == {str(active_emer.id)}
    assert await found(**{"class": f"{ACT_CODE}|"}) == {str(finished_imp.id), str(active_emer.id)}
    assert await found(**{"class": f"{V2_0004}|B"}) == {str(planned_v2.id)}
    assert await found(**{"class": f"{V2_0004}|IMP"}) == set()
    assert await found(**{"class": "|IMP"}) == set()  # stored with a system
    assert await found(**{"class": "UNK"}) == {str(no_class.id)}
    # repeated parameters are AND-ed
    resp = await client.get("/fhir/Encounter?status=finished,in-progress&class=EMER", headers=bearer(token))
    assert ids(bundle(resp)) == {str(active_emer.id)}


# The unit tests' periods around 2015-02-08 (UTC), moved to that day on the facility clock (New York, UTC-5).
NY_SHIFT = timedelta(hours=5)


@pytest.mark.api_only
async def test_date_prefixes_have_range_semantics_in_sql(
    client: httpx.AsyncClient, token_for: TokenFor, db: AsyncEngine
) -> None:
    by_id: dict[str, str] = {}
    for name, (start, end) in PERIODS.items():
        encounter = await seed(
            db,
            admit_at=start + NY_SHIFT if start else None,
            discharge_at=end + NY_SHIFT if end else None,
            status="finished" if end else "in-progress",
        )
        by_id[str(encounter.id)] = name
    await seed(db, admit_at=None, discharge_at=None, status="planned")  # no period: never matches
    token = token_for("PMC")
    for prefix in DATE_PREFIXES:
        body = bundle(await search(client, token, {"date": f"{prefix}2015-02-08", "_count": "100"}))
        assert {by_id[i] for i in ids(body)} == EXPECTED[prefix], prefix
        assert body["total"] == len(EXPECTED[prefix])

    # a window: both criteria must hold
    window = [("date", "ge2015-02-08"), ("date", "le2015-02-08")]
    body = bundle(await search(client, token, [*window, ("_count", "100")]))
    assert {by_id[i] for i in ids(body)} == EXPECTED["ge"] & EXPECTED["le"]
    # a dateTime with its own offset: the instant the "inside" visit was admitted
    body = bundle(await search(client, token, {"date": "ap2015-02-08T15:00:00+05:00", "_count": "100"}))
    assert "inside" not in {by_id[i] for i in ids(body)}  # 10:00Z is before the visit (15:00Z)
    body = bundle(await search(client, token, {"date": "ap2015-02-08T10:00:00-05:00", "_count": "100"}))
    assert "inside" in {by_id[i] for i in ids(body)}


@pytest.mark.api_only
async def test_paging_follows_next_links_to_every_match(
    client: httpx.AsyncClient, token_for: TokenFor, db: AsyncEngine
) -> None:
    patient = await new_patient(db)
    seeded = {str((await seed(db, patient)).id) for _ in range(5)}
    await seed(db)  # someone else's
    token = token_for("PMC")
    seen: list[str] = []
    url: str | None = f"/fhir/Encounter?patient={patient}&_count=2"
    pages = 0
    while url:
        body = bundle(await client.get(url, headers=bearer(token)))
        assert body["total"] == 5
        assert len(body.get("entry", [])) <= 2
        seen += [e["resource"]["id"] for e in body.get("entry", [])]
        links = {link["relation"]: link["url"] for link in body["link"]}
        assert "_cursor" in links["self"] or pages == 0
        url = links.get("next")
        if url:
            assert url.startswith("http://carecoord.test/fhir/Encounter?") and f"patient={patient}" in url
        pages += 1
    assert pages == 3 and len(seen) == 5 and set(seen) == seeded

    body = bundle(await search(client, token, {"patient": str(patient), "_count": "0"}))
    assert body["total"] == 5 and "entry" not in body
    assert [link["relation"] for link in body["link"]] == ["self"]

    outcome(await search(client, token, {"_cursor": "bm90LWEtY3Vyc29y"}), 400, "invalid")


@pytest.mark.api_only
async def test_part2_encounters_are_hidden_without_a_part2_role(
    client: httpx.AsyncClient, token_for: TokenFor, db: AsyncEngine
) -> None:
    patient = await new_patient(db)
    ordinary = await seed(db, patient)
    part2 = await seed(
        db,
        patient,
        part2=True,
        behavioral_health=True,
        diagnoses=[["F10.20", "I10"]],
        security_labels=[*BH_LABELS, *PART2_LABELS],
    )
    pmc, part2_reader = token_for("PMC", sub="pmc-1"), token_for("PMC", "PART2", sub="sud-1")
    # The Part 2 permission alone is not enough: the patient's consent is needed too.
    body = bundle(await search(client, part2_reader, {"patient": str(patient)}))
    assert body["total"] == 1 and ids(body) == {str(ordinary.id)}
    await record_consent(db, patient)

    body = bundle(await search(client, pmc, {"patient": str(patient)}))
    assert body["total"] == 1 and ids(body) == {str(ordinary.id)}

    hidden = await client.get(f"/fhir/Encounter/{part2.id}", headers=bearer(pmc))
    unknown = await client.get(f"/fhir/Encounter/{uuid.uuid4()}", headers=bearer(pmc))
    outcome(hidden, 404, "not-found")
    # indistinguishable from an id that does not exist (apart from the id itself)
    assert hidden.json()["issue"][0]["diagnostics"].replace(str(part2.id), "X") == unknown.json()["issue"][0][
        "diagnostics"
    ].replace(unknown.url.path.rsplit("/", 1)[1], "X")

    body = bundle(await search(client, part2_reader, {"patient": str(patient)}))
    assert body["total"] == 2 and ids(body) == {str(ordinary.id), str(part2.id)}
    resource = fhir_json(await client.get(f"/fhir/Encounter/{part2.id}", headers=bearer(part2_reader)))
    assert {"system": ACT_CODE, "code": "42CFRPart2"} in resource["meta"]["security"]

    trail = await audits(db)
    # the refused read is on record, with the patient it was about
    refused = [a for a in trail if a.outcome == "4" and a.patient_ids]
    assert trail[-1].client_ip and trail[-1].user_agent  # the client is on record
    assert len(refused) == 1 and refused[0].actor == "pmc-1" and refused[0].patient_ids == [str(patient)]


@pytest.mark.api_only
async def test_unknown_parameters_lenient_by_default_strict_on_request(
    client: httpx.AsyncClient, token_for: TokenFor, db: AsyncEngine
) -> None:
    encounter = await seed(db)
    token = token_for("PMC")
    body = bundle(await search(client, token, {"status": "finished", "foo": "bar"}))
    assert ids(body) == {str(encounter.id)} and body["total"] == 1
    self_query = parse_qs(urlsplit(body["link"][0]["url"]).query)
    assert "foo" not in self_query and self_query["status"] == ["finished"]
    warnings = [e for e in body["entry"] if e["search"]["mode"] == "outcome"]
    assert len(warnings) == 1 and "foo" in warnings[0]["resource"]["issue"][0]["diagnostics"]

    strict = await search(client, token, {"status": "finished", "foo": "bar"}, Prefer="handling=strict")
    assert outcome(strict, 400, "invalid")["issue"][0]["expression"] == ["foo"]
    # known parameters are fine in strict mode, and _format is accepted
    assert bundle(await search(client, token, {"status": "finished", "_format": "json"}, Prefer="handling=strict"))
    # an unsupported modifier on a known parameter is refused in either mode
    outcome(await search(client, token, {"status:not": "finished"}), 400, "invalid")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"date": "xx2015-02-08"}, "date"),
        ({"date": "2015-02-30"}, "date"),
        ({"date": "2015-02-08T10:00+25:00"}, "date"),
        ({"_count": "many"}, "_count"),
        ({"_count": "-1"}, "_count"),
        ({"patient": "Group/123"}, "patient"),
        ({"class": "|"}, "class"),
    ],
)
@pytest.mark.api_only
async def test_invalid_search_values_are_400_naming_the_parameter(
    client: httpx.AsyncClient, token_for: TokenFor, db: AsyncEngine, params: dict[str, str], field: str
) -> None:
    body = outcome(await search(client, token_for("PMC"), params), 400, "invalid")
    assert body["issue"][0]["expression"] == [field]
    assert await audits(db) == []


# --- end to end: an ADT message through the real broker -------------------------------------------


async def test_adt_with_a_substance_use_diagnosis_is_part2_end_to_end(
    runtime: Runtime, settings: Settings, client: httpx.AsyncClient, token_for: TokenFor, db: AsyncEngine
) -> None:
    # keyed like the patient's other events, so the admit (with its DG1) is applied before the discharge
    key = patient_partition_key("urn:hl7v2:aa:GOODHEALTH", "MRN12345")
    await produce(settings, adt("A01", diagnoses=(("F10.20", "I10"),)).encode(), key=key)
    await produce(settings, adt("A03", control_id="MSG-0002").encode(), key=key)
    part2_reader = token_for("BHCF", "PART2")  # a SUD stay is behavioral health: BHCF queue

    async def patient_id() -> uuid.UUID | None:
        async with AsyncSession(db) as session:
            return await session.scalar(select(Encounter.patient_id))

    subject = await eventually(patient_id)
    assert subject is not None
    await record_consent(db, subject)

    async def finished() -> dict[str, Any] | None:
        body = bundle(await search(client, part2_reader, {"status": "finished"}))
        return body if body["total"] == 1 and "security" in body["entry"][0]["resource"].get("meta", {}) else None

    body = await eventually(finished)
    assert body is not None
    resource = body["entry"][0]["resource"]
    assert resource["class"]["code"] == "IMP"
    # PV1-44 20261115083000-0500 and PV1-45 20261120140000-0500 as UTC instants
    assert resource["period"] == {"start": "2026-11-15T13:30:00+00:00", "end": "2026-11-20T19:00:00+00:00"}
    assert resource["hospitalization"]["dischargeDisposition"]["coding"][0]["code"] == "01"
    assert {"system": ACT_CODE, "code": "42CFRPart2"} in resource["meta"]["security"]
    assert resource["reasonCode"][0]["coding"][0]["code"] == "F10.20"
    assert resource["identifier"][0] == {
        "use": "usual",
        "type": resource["identifier"][0]["type"],
        "system": "urn:carecoord:visit:GOODHEALTH",
        "value": "V0001",
    }
    # invisible to a facilitator of the same queue without a Part 2 role
    assert bundle(await search(client, token_for("BHCF"), {"status": "finished"}))["total"] == 0
