"""42 CFR Part 2 end to end: tasks raised from a Part 2 encounter or a substance-use screening carry the
label (both create paths); such data is returned only to a Part 2 holder for a patient with an active
recorded consent, and is otherwise left out without a trace (404 on read, absent from totals). Consents
are recorded over REST and read back as validated FHIR R4 Consent resources."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.consent import Consent as FhirConsent
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.api.access import has_active_consent
from app.db.models import AuditEvent, Consent, ScreeningEvent, Task
from app.runtime import Runtime
from app.settings import DEFAULT_RULES_FILE, Settings
from app.state.consents import move_on_merge
from tests.access_builder import in_scope, record_consent
from tests.careplan_seed import seed_patient
from tests.conftest import bearer, eventually
from tests.fhir_builder import encode, observation
from tests.hl7_builder import adt
from tests.integration.test_adt_pipeline import produce
from tests.integration.test_fhir_clinical import patient_id_for, produce_fhir


@pytest.fixture(params=[True, False], ids=["batch", "per-message"])
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """Both task create paths: the batch row builder and create_task_once (per message); the shipped
    rules, so a positive AUDIT-C raises a BH referral."""
    return settings.model_copy(update={"consumer_batch_transactions": request.param, "rules_file": DEFAULT_RULES_FILE})


async def tasks(db: AsyncEngine, *where: Any) -> list[Task]:
    async with AsyncSession(db) as session:
        return list((await session.execute(select(Task).where(*where))).scalars().all())


async def screening_count(db: AsyncEngine, n: int) -> bool:
    async with AsyncSession(db) as session:
        return len((await session.execute(select(ScreeningEvent.id))).all()) == n


def task_ids(response: httpx.Response) -> set[str]:
    assert response.status_code == 200, response.text
    return {item["id"] for item in response.json()["items"]}


async def test_part2_encounter_tasks_are_labelled_and_consent_gated(
    runtime: Runtime, settings: Settings, client: httpx.AsyncClient, db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    await produce(settings, adt("A01", diagnoses=(("F10.20", "I10"),)).encode(), key=b"p2")
    await produce(settings, adt("A03", control_id="MSG-0002").encode(), key=b"p2")
    await produce(
        settings, adt("A03", control_id="MSG-0003", mrn="MRN-PLAIN", visit_number="V-PLAIN").encode(), key=b"pl"
    )

    async def both() -> list[Task] | None:
        found = await tasks(db, Task.rule_id == "post-discharge-contact")
        return found if len(found) == 2 else None

    found = await eventually(both)
    assert found
    part2 = [t for t in found if t.part2]
    assert len(part2) == 1 and part2[0].role == "BHCF"  # the SUD stay's task; the other is not Part 2
    p2_task, p2_patient = part2[0], part2[0].patient_id
    bhcf, holder = token_for("BHCF", sub="bhcf-1"), token_for("BHCF", "PART2", sub="sud-1")
    pmc = token_for("PMC")
    plain = next(t for t in found if not t.part2)

    # Without the permission, or without consent: the task does not exist as far as the caller can tell.
    for token in (bhcf, holder):
        assert str(p2_task.id) not in task_ids(await client.get("/tasks", headers=bearer(token)))
        hidden = await client.get(f"/tasks/{p2_task.id}/explain", headers=bearer(token))
        assert hidden.status_code == 404 and "part" not in hidden.text.lower()
    assert str(plain.id) in task_ids(await client.get("/tasks", params={"role": plain.role}, headers=bearer(pmc)))

    supervisor = token_for("SUPERVISOR", sub="sup-1")
    recorded = await client.post(f"/patients/{p2_patient}/consents", json={}, headers=bearer(supervisor))
    assert recorded.status_code == 201, recorded.text
    consent = recorded.json()
    assert consent["status"] == "active" and consent["recorded_by"] == "sup-1"

    assert str(p2_task.id) in task_ids(await client.get("/tasks", headers=bearer(holder)))
    assert (await client.get(f"/tasks/{p2_task.id}/explain", headers=bearer(holder))).status_code == 200
    assert str(p2_task.id) not in task_ids(await client.get("/tasks", headers=bearer(bhcf)))  # still no permission

    # The encounter follows the same rule.
    enc = await client.get("/fhir/Encounter", params={"patient": str(p2_patient)}, headers=bearer(holder))
    assert enc.json()["total"] == 1
    enc = await client.get("/fhir/Encounter", params={"patient": str(p2_patient)}, headers=bearer(bhcf))
    assert enc.json()["total"] == 0

    # FHIR Consent read and search: valid R4, only for Part 2 holders.
    read = await client.get(f"/fhir/Consent/{consent['id']}", headers=bearer(holder))
    assert read.status_code == 200, read.text
    resource = FhirConsent.model_validate(read.json()).model_dump(mode="json")
    assert resource["category"][0]["coding"][0] == {
        "system": "http://loinc.org",
        "code": "59284-0",
        "display": "Patient Consent",
    }
    assert resource["patient"]["reference"] == f"Patient/{p2_patient}" and resource["provision"]["type"] == "permit"
    assert (await client.get(f"/fhir/Consent/{consent['id']}", headers=bearer(bhcf))).status_code == 403
    searched = await client.get("/fhir/Consent", params={"patient": f"Patient/{p2_patient}"}, headers=bearer(holder))
    Bundle.model_validate(searched.json())
    assert searched.json()["total"] == 1

    # Revocation: a new record with status inactive supersedes; the data is hidden again.
    revoked = await client.post(
        f"/patients/{p2_patient}/consents", json={"status": "inactive"}, headers=bearer(supervisor)
    )
    assert revoked.status_code == 201
    assert str(p2_task.id) not in task_ids(await client.get("/tasks", headers=bearer(holder)))
    earlier = await client.get(f"/fhir/Consent/{consent['id']}", headers=bearer(holder))
    assert earlier.json()["status"] == "inactive"


@pytest.mark.api_only
async def test_consent_errors_are_problem_json_and_audited(
    runtime: Runtime, client: httpx.AsyncClient, db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    supervisor = token_for("SUPERVISOR", sub="sup-2")
    unknown = await client.post(f"/patients/{uuid.uuid4()}/consents", json={}, headers=bearer(supervisor))
    assert unknown.status_code == 404 and unknown.headers["content-type"].startswith("application/problem+json")
    assert unknown.json()["field"] == "patient_id"
    start = datetime(2026, 11, 1, tzinfo=UTC)
    backwards = {"period_start": start.isoformat(), "period_end": (start - timedelta(days=1)).isoformat()}
    bad = await client.post(f"/patients/{uuid.uuid4()}/consents", json=backwards, headers=bearer(supervisor))
    assert bad.status_code == 422 and bad.json()["field"] == "period_end"
    naive = await client.post(
        f"/patients/{uuid.uuid4()}/consents", json={"period_start": "2026-11-01T00:00:00"}, headers=bearer(supervisor)
    )
    assert naive.status_code == 422 and naive.json()["field"] == "period_start"
    wrong_scope = await client.post(
        f"/patients/{uuid.uuid4()}/consents", json={"scope": "research"}, headers=bearer(supervisor)
    )
    assert wrong_scope.status_code == 422 and wrong_scope.json()["field"] == "scope"
    async with AsyncSession(db) as session:
        trail = (await session.execute(select(AuditEvent).where(AuditEvent.resource_type == "Consent"))).scalars().all()
    assert [(a.action, a.outcome, a.actor) for a in trail] == [("C", "4", "sup-2")]


async def test_substance_use_screening_is_part2(
    runtime: Runtime, settings: Settings, client: httpx.AsyncClient, db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    audit_c = observation("75626-2", ident="AUDC-1", value={"valueInteger": 9})
    phq9 = observation(ident="PHQ-1", value={"valueInteger": 15})
    await produce_fhir(settings, encode(audit_c))

    async def referrals() -> list[Task] | None:
        found = await tasks(db, Task.rule_id == "bh-referral")
        return found or None

    found = await eventually(referrals)
    assert found and len(found) == 1
    referral = found[0]
    assert referral.part2, "raised from the AUDIT-C result"
    await produce_fhir(settings, encode(phq9))  # positive too, but the referral loop is already open
    assert await eventually(lambda: screening_count(db, 2))
    patient = await patient_id_for(db, "MRN-SCREEN-1")
    assert patient
    holder, bhcf = token_for("BHCF", "PART2"), token_for("BHCF")

    async def observations(token: str) -> dict[str, Any]:
        response = await client.get("/fhir/Observation", params={"patient": str(patient)}, headers=bearer(token))
        assert response.status_code == 200, response.text
        return response.json()

    async def screening_instruments(token: str) -> list[str]:
        response = await client.get(f"/patients/{patient}/screenings", headers=bearer(token))
        assert response.status_code == 200, response.text
        return sorted(s["instrument"] for s in response.json()["screenings"])

    # Without consent the referral (Part 2) does not put the patient in anyone's scope; a plain task does.
    assert (await client.get(f"/patients/{patient}/screenings", headers=bearer(holder))).status_code == 404
    await in_scope(db, patient, "BHCF")
    for token in (bhcf, holder):  # no permission, or no consent: the AUDIT-C result is left out
        assert await screening_instruments(token) == ["PHQ-9"]
        assert (await observations(token))["total"] == 1
    recorded = await client.post(f"/patients/{patient}/consents", json={}, headers=bearer(token_for("SUPERVISOR")))
    assert recorded.status_code == 201, recorded.text
    assert await screening_instruments(holder) == ["AUDIT-C", "PHQ-9"]
    assert (await observations(holder))["total"] == 2
    assert await screening_instruments(bhcf) == ["PHQ-9"]  # consent without the permission is not enough
    listed = await client.get("/tasks", headers=bearer(holder))
    assert str(referral.id) in task_ids(listed)


@pytest.mark.api_only
async def test_a_task_follows_its_encounter_into_part2(
    runtime: Runtime, client: httpx.AsyncClient, db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    """The task's label is set when it is raised; an encounter that becomes Part 2 later (an A08 adding
    an F10-F19 diagnosis) must hide its existing tasks too, from every task read."""
    from app.db.models import Encounter, Patient
    from tests.access_builder import record_consent, scope_task

    async with AsyncSession(db, expire_on_commit=False) as session, session.begin():
        patient = Patient(family_name="LATER")
        session.add(patient)
        await session.flush()
        encounter = Encounter(patient_id=patient.id, facility="F", visit_number="P2L", status="finished", part2=False)
        session.add(encounter)
        await session.flush()
        task = scope_task(patient.id, "PMC", "T1", encounter_id=encounter.id)
        session.add(task)
    pmc, pmc_part2 = token_for("PMC", teams=("T1",)), token_for("PMC", "PART2", teams=("T1",))

    async def visible(token: str) -> tuple[bool, int]:
        listed = {t["id"] for t in (await client.get("/tasks", headers=bearer(token))).json()["items"]}
        return str(task.id) in listed, (await client.get(f"/tasks/{task.id}", headers=bearer(token))).status_code

    assert await visible(pmc) == (True, 200)
    async with AsyncSession(db) as session, session.begin():
        (await session.get(Encounter, encounter.id)).part2 = True  # what the A08 recomputes
    assert await visible(pmc) == (False, 404)
    assert await visible(pmc_part2) == (False, 404)  # the permission alone is not enough: no consent
    await record_consent(db, patient.id)
    assert await visible(pmc_part2) == (True, 200)


@pytest.mark.api_only
async def test_the_encounter_label_reaches_tasks_raised_later_and_leaves_when_withdrawn(
    runtime: Runtime, client: httpx.AsyncClient, db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    """The database copies the encounter's label to its tasks (migration 0016): a task raised without
    the label for an encounter that is already Part 2 is Part 2, and a corrected encounter (the
    diagnosis entered in error) lets go of tasks that were not Part 2 by themselves."""
    from app.db.models import Encounter, Patient, Task
    from tests.access_builder import scope_task

    async with AsyncSession(db, expire_on_commit=False) as session, session.begin():
        patient = Patient(family_name="ALREADY")
        session.add(patient)
        await session.flush()
        encounter = Encounter(patient_id=patient.id, facility="F", visit_number="P2A", status="finished", part2=True)
        session.add(encounter)
        await session.flush()
        own = scope_task(patient.id, "PMC", "T1", encounter_id=encounter.id, part2=True)  # raised from SUD data
        plain = scope_task(patient.id, "PMC", "T1", encounter_id=encounter.id)
        session.add_all([own, plain])
    pmc = token_for("PMC", teams=("T1",))

    async def listed() -> set[str]:
        return {t["id"] for t in (await client.get("/tasks", headers=bearer(pmc))).json()["items"]}

    async def labels() -> dict[str, bool]:
        async with AsyncSession(db) as session:
            rows = await session.execute(select(Task.id, Task.encounter_part2).where(Task.patient_id == patient.id))
            return {str(task_id): bool(label) for task_id, label in rows}

    assert await labels() == {str(own.id): True, str(plain.id): True}
    assert not {str(own.id), str(plain.id)} & await listed()
    async with AsyncSession(db) as session, session.begin():
        (await session.get(Encounter, encounter.id)).part2 = False
    assert await labels() == {str(own.id): False, str(plain.id): False}
    shown = await listed()
    assert str(plain.id) in shown and str(own.id) not in shown  # its own label stays


async def test_a_merge_moves_consent_to_the_survivor(
    runtime: Runtime, settings: Settings, client: httpx.AsyncClient, db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    """A40: the consent recorded on the merged record is the person's, so the survivor's Part 2 work shows
    to a Part 2 holder, and the FHIR Consent now names the survivor."""
    await produce(
        settings, adt("A03", control_id="OLD-SUD", mrn="OLD-1", diagnoses=(("F10.20", "I10"),)).encode(), key=b"m"
    )
    await produce(settings, adt("A01", control_id="NEW-A01", mrn="NEW-1", visit_number="V-NEW").encode(), key=b"m")

    async def part2_task() -> list[Task] | None:
        return await tasks(db, Task.part2.is_(True), Task.rule_id == "post-discharge-contact") or None

    [sud_task] = await eventually(part2_task) or []
    prior = sud_task.patient_id
    supervisor, holder = token_for("SUPERVISOR", sub="sup-1"), token_for("BHCF", "PART2", sub="sud-1")
    recorded = await client.post(f"/patients/{prior}/consents", json={}, headers=bearer(supervisor))
    assert recorded.status_code == 201, recorded.text
    consent_id = recorded.json()["id"]

    await produce(
        settings, adt("A40", control_id="A40", mrn="NEW-1", prior_mrn="OLD-1", include_pv1=False).encode(), key=b"m"
    )

    async def moved() -> Task | None:
        [task] = await tasks(db, Task.id == sud_task.id)
        return task if task.patient_id != prior else None

    survivor = (await eventually(moved) or sud_task).patient_id
    assert survivor != prior
    assert str(sud_task.id) in task_ids(await client.get("/tasks", headers=bearer(holder)))
    searched = await client.get("/fhir/Consent", params={"patient": f"Patient/{survivor}"}, headers=bearer(holder))
    [entry] = searched.json()["entry"]
    resource = FhirConsent.model_validate(entry["resource"]).model_dump(mode="json")
    assert resource["id"] == consent_id and resource["status"] == "active"
    assert resource["patient"]["reference"] == f"Patient/{survivor}"


@pytest.mark.api_only
@pytest.mark.parametrize("revoked_last", [True, False], ids=["revoked-last", "consented-last"])
async def test_after_a_merge_the_latest_recorded_consent_decides(db: AsyncEngine, revoked_last: bool) -> None:
    """One record's consent and the other's revocation meet in a merge: the later decision holds, so an
    older consent cannot outlive a revocation."""
    survivor, prior = (await seed_patient(db)).patient_id, (await seed_patient(db)).patient_id
    first, second = (prior, survivor) if revoked_last else (survivor, prior)
    await record_consent(db, first, status="active" if revoked_last else "inactive")
    await record_consent(db, second, status="inactive" if revoked_last else "active")
    async with AsyncSession(db) as session, session.begin():
        await move_on_merge(session, prior, survivor)
    async with AsyncSession(db) as session:
        held = (await session.execute(select(Consent).order_by(Consent.recorded_at))).scalars().all()
        consented = await session.scalar(select(has_active_consent(survivor)))
    assert [row.patient_id for row in held] == [survivor, survivor]
    assert [row.status for row in held] == ["inactive", "inactive" if revoked_last else "active"]
    assert consented is (not revoked_last)
    assert {row.resource["patient"]["reference"] for row in held} == {f"Patient/{survivor}"}


@pytest.mark.api_only
async def test_consent_audit_records_are_gated_like_consents(
    runtime: Runtime, client: httpx.AsyncClient, db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    """An AuditEvent of a Consent write or read tells the patient has Part 2 data: an auditor without the
    Part 2 permission finds none (not in the results, not in the total); one with it finds them all."""
    seeded = await seed_patient(db)
    supervisor = bearer(token_for("SUPERVISOR", sub="sup-audit", teams=("T1",)))
    written = await client.post(f"/patients/{seeded.patient_id}/consents", json={}, headers=supervisor)
    assert written.status_code == 201, written.text
    consent_id = written.json()["id"]
    holder = bearer(token_for("SUPERVISOR", "PART2", sub="sud-auditee", teams=("T1",)))
    assert (await client.get(f"/fhir/Consent/{consent_id}", headers=holder)).status_code == 200
    other = await client.get(f"/patients/{seeded.patient_id}/care-plans", headers=holder)  # not Part 2
    assert other.status_code == 200, other.text
    params = {"patient": str(seeded.patient_id)}

    async def searched(token: str) -> dict[str, Any]:
        response = await client.get("/fhir/AuditEvent", params=params, headers=bearer(token))
        assert response.status_code == 200, response.text
        return dict(response.json())

    plain = await searched(token_for("AUDITOR", sub="auditor-plain"))
    names = [e["resource"]["entity"][-1]["name"] for e in plain.get("entry", [])]
    assert names == ["CarePlan"] and plain["total"] == 1, names
    assert consent_id not in json.dumps(plain) and "Consent" not in json.dumps(plain)
    entitled = await searched(token_for("AUDITOR", "PART2", sub="auditor-p2"))
    names = [e["resource"]["entity"][-1]["name"] for e in entitled["entry"]]
    # (the plain auditor's search is on record too, naming the patient it found)
    assert sorted(names) == ["AuditEvent", "CarePlan", "Consent", "Consent"] and entitled["total"] == 4, names
