"""Care plans over REST and FHIR against the real database: versioning with If-Match, one active plan
per patient (in the API and in the database), PCP sign-off and the due list, access scoping and audit.
Every FHIR body is validated with fhir.resources' R4B models."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.careplan import CarePlan as FhirCarePlan
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient as FhirPatient
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.db.models import AuditEvent, CarePlan, CarePlanVersion, Consent, RosterMember
from app.fhir.careplan import SIGN_OFF_EXT
from app.state.care_plans import move_on_merge
from tests.access_builder import record_consent
from tests.careplan_seed import MRN_SYSTEM, add_task, attribute, seed_patient
from tests.conftest import bearer
from tests.integration.test_fhir_encounter_api import seed as seed_encounter

pytestmark = pytest.mark.api_only  # seeds the database itself; no events are consumed

TokenFor = Callable[..., str]
FHIR_JSON = "application/fhir+json"

PLAN: dict[str, Any] = {
    "title": "Recovery plan",
    "goals": [{"description": "Sleep through the night", "target_date": "2027-01-15"}],
    "activities": [{"description": "Counselling referral", "goal_ids": ["g1"]}],
    "care_team": [{"name": "Dr Rivera", "role": "PCP"}],
    "patient_actions": [{"description": "Walk daily", "frequency": "daily"}],
}


def bhcf(token_for: TokenFor, team: str = "T1", sub: str = "fac-1") -> dict[str, str]:
    return bearer(token_for("BHCF", sub=sub, teams=(team,)))


def pcp(token_for: TokenFor, team: str = "T1") -> dict[str, str]:
    return bearer(token_for("PCP", sub="dr-rivera", teams=(team,)))


async def create(
    client: httpx.AsyncClient, headers: dict[str, str], patient_id: uuid.UUID, **over: Any
) -> httpx.Response:
    return await client.post(f"/patients/{patient_id}/care-plans", json=PLAN | over, headers=headers)


async def test_create_read_update_history(client: httpx.AsyncClient, db: AsyncEngine, token_for: TokenFor) -> None:
    seeded = await seed_patient(db)
    headers = bhcf(token_for)
    created = await create(
        client, headers, seeded.patient_id, activities=[{"description": "call", "task_id": str(seeded.task_id)}]
    )
    assert created.status_code == 201, created.text
    plan = created.json()
    assert created.headers["etag"] == 'W/"1"' and created.headers["location"] == f"/care-plans/{plan['id']}"
    assert plan["version"] == 1 and plan["status"] == "active" and plan["sign_off"] is None
    assert [g["id"] for g in plan["goals"]] == ["g1"] and plan["activities"][0]["id"] == "a1"
    assert plan["created_by"] == "fac-1" and plan["activated_at"] is not None

    active = await client.get(f"/patients/{seeded.patient_id}/care-plan", headers=headers)
    assert active.status_code == 200 and active.json()["id"] == plan["id"] and active.headers["etag"] == 'W/"1"'

    body = PLAN | {"title": "Recovery plan, revised"}
    missing = await client.put(f"/care-plans/{plan['id']}", json=body, headers=headers)
    assert missing.status_code == 428 and missing.json()["field"] == "If-Match"
    assert missing.headers["content-type"] == "application/problem+json"
    stale = await client.put(f"/care-plans/{plan['id']}", json=body, headers=headers | {"If-Match": 'W/"7"'})
    assert stale.status_code == 412 and stale.json()["field"] == "If-Match"
    updated = await client.put(f"/care-plans/{plan['id']}", json=body, headers=headers | {"If-Match": 'W/"1"'})
    assert updated.status_code == 200, updated.text
    assert updated.headers["etag"] == 'W/"2"' and updated.json()["title"] == "Recovery plan, revised"
    again = await client.put(f"/care-plans/{plan['id']}", json=body, headers=headers | {"If-Match": 'W/"1"'})
    assert again.status_code == 412  # the writer who read version 1 too loses, nothing is overwritten

    history = await client.get(f"/care-plans/{plan['id']}/history", headers=headers)
    assert history.status_code == 200
    versions = history.json()
    assert [(v["version"], v["action"]) for v in versions] == [(2, "update"), (1, "create")]
    assert versions[1]["plan"]["title"] == "Recovery plan" and versions[1]["plan"]["activities"][0]["task_id"]
    assert (
        versions[0]["plan"]["title"] == "Recovery plan, revised"
        and versions[0]["plan"]["activities"][0]["description"] == "Counselling referral"
    )

    async with AsyncSession(db) as session:
        audits = (await session.execute(select(AuditEvent).where(AuditEvent.resource_type == "CarePlan"))).scalars()
        actions = sorted((a.action, a.outcome) for a in audits if str(seeded.patient_id) in a.patient_ids)
    assert actions.count(("C", "0")) == 1 and actions.count(("U", "0")) == 1 and ("R", "0") in actions


async def test_one_active_plan_per_patient(client: httpx.AsyncClient, db: AsyncEngine, token_for: TokenFor) -> None:
    seeded = await seed_patient(db)
    headers = bhcf(token_for)
    first = await create(client, headers, seeded.patient_id)
    assert first.status_code == 201
    second = await create(client, headers, seeded.patient_id)
    assert second.status_code == 409 and second.json()["field"] == "status"
    draft = await create(client, headers, seeded.patient_id, status="draft")
    assert draft.status_code == 201
    activate = await client.put(
        f"/care-plans/{draft.json()['id']}", json=PLAN | {"status": "active"}, headers=headers | {"If-Match": 'W/"1"'}
    )
    assert activate.status_code == 409 and activate.json()["field"] == "status"
    close = await client.put(
        f"/care-plans/{first.json()['id']}", json=PLAN | {"status": "completed"}, headers=headers | {"If-Match": "*"}
    )
    assert close.status_code == 200
    activate = await client.put(
        f"/care-plans/{draft.json()['id']}", json=PLAN | {"status": "active"}, headers=headers | {"If-Match": 'W/"1"'}
    )
    assert activate.status_code == 200
    listed = await client.get(f"/patients/{seeded.patient_id}/care-plans", headers=headers)
    assert sorted(p["status"] for p in listed.json()) == ["active", "completed"]

    # the database enforces it too, for any writer that skips the API's check
    async with AsyncSession(db) as session:
        with pytest.raises(IntegrityError):
            async with session.begin():
                await session.execute(
                    update(CarePlan)
                    .where(CarePlan.id == uuid.UUID(first.json()["id"]))
                    .values(status="active", active_patient_id=seeded.patient_id)
                )


async def test_validation_names_the_field(client: httpx.AsyncClient, db: AsyncEngine, token_for: TokenFor) -> None:
    seeded = await seed_patient(db)
    other = await seed_patient(db)
    headers = bhcf(token_for)
    cases = [
        ({"goals": [{"description": "x", "target_date": "soon"}]}, "goals.0.target_date"),
        ({"activities": [{"description": "x", "goal_ids": ["nope"]}]}, "activities.0.goal_ids"),
        ({"activities": [{"description": "x", "task_id": str(other.task_id)}]}, "activities.0.task_id"),
        ({"activities": [{"description": "x", "task_id": str(uuid.uuid4())}]}, "activities.0.task_id"),
        ({"period_start": "2026-02-01", "period_end": "2026-01-01"}, "period_end"),
        ({"status": "unknown"}, "status"),
        ({"surprise": 1}, "surprise"),
    ]
    for over, field in cases:
        response = await create(client, headers, seeded.patient_id, **over)
        assert response.status_code == 422, (over, response.text)
        assert response.json()["field"] == field, (over, response.json())
    async with AsyncSession(db) as session:
        assert (await session.execute(select(CarePlan))).first() is None


async def test_access_scoping(client: httpx.AsyncClient, db: AsyncEngine, token_for: TokenFor) -> None:
    seeded = await seed_patient(db, role="BHCF", team="T1")
    plan = (await create(client, bhcf(token_for), seeded.patient_id)).json()
    outsider = bhcf(token_for, team="T2")
    assert (await client.get(f"/care-plans/{plan['id']}", headers=outsider)).status_code == 404
    assert (await client.get(f"/patients/{seeded.patient_id}/care-plan", headers=outsider)).status_code == 404
    assert (await create(client, outsider, seeded.patient_id, status="draft")).status_code == 404
    put = await client.put(f"/care-plans/{plan['id']}", json=PLAN, headers=outsider | {"If-Match": "*"})
    assert put.status_code == 404
    supervisor = bearer(token_for("SUPERVISOR", teams=("T1",)))
    assert (await client.get(f"/care-plans/{plan['id']}", headers=supervisor)).status_code == 200
    put = await client.put(f"/care-plans/{plan['id']}", json=PLAN, headers=supervisor | {"If-Match": 'W/"1"'})
    assert put.status_code == 200
    no_role = bearer(token_for(teams=("T1",)))
    assert (await client.get(f"/care-plans/{plan['id']}", headers=no_role)).status_code == 403
    nurse_pcp = pcp(token_for)
    assert (await create(client, nurse_pcp, seeded.patient_id, status="draft")).status_code == 403
    assert (await client.get(f"/care-plans/{plan['id']}")).status_code == 401
    sign = await client.post(f"/care-plans/{plan['id']}/sign-off", headers=bhcf(token_for) | {"If-Match": "*"})
    assert sign.status_code == 403
    async with AsyncSession(db) as session:
        refused = (
            (
                await session.execute(
                    select(AuditEvent).where(AuditEvent.resource_type == "CarePlan", AuditEvent.outcome == "4")
                )
            )
            .scalars()
            .all()
        )
    # the outsider's create and update, the PCP's create, the facilitator's sign-off: refused and audited
    assert sorted(a.action for a in refused if a.request.startswith(("PUT", "POST"))) == ["C", "C", "U", "U"]


async def test_pcp_sign_off_and_due_list(client: httpx.AsyncClient, db: AsyncEngine, token_for: TokenFor) -> None:
    fresh, old, signed_long_ago = [await seed_patient(db) for _ in range(3)]
    for s in (fresh, old, signed_long_ago):
        await attribute(db, s.patient_id, "T1")
    headers = bhcf(token_for)
    plans = {}
    for name, s in (("fresh", fresh), ("old", old), ("signed", signed_long_ago)):
        plans[name] = (await create(client, headers, s.patient_id)).json()
    now = datetime.now(UTC)
    async with AsyncSession(db) as session, session.begin():
        await session.execute(
            update(CarePlan)
            .where(CarePlan.id == uuid.UUID(plans["old"]["id"]))
            .values(activated_at=now - timedelta(days=45))
        )
        await session.execute(
            update(CarePlan)
            .where(CarePlan.id == uuid.UUID(plans["signed"]["id"]))
            .values(
                activated_at=now - timedelta(days=800),
                signed_off_at=now - timedelta(days=360),
                signed_off_by="dr-old",
                signed_off_version=1,
            )
        )
    doctor = pcp(token_for)
    due = await client.get("/care-plans/sign-off-due", headers=doctor)
    assert due.status_code == 200, due.text
    items = {i["plan"]["id"]: i["state"] for i in due.json()["items"]}
    assert items == {plans["old"]["id"]: "overdue", plans["signed"]["id"]: "due"}
    first = (await client.get("/care-plans/sign-off-due?limit=1", headers=doctor)).json()["items"]
    assert [i["plan"]["id"] for i in first] == [plans["old"]["id"]]  # soonest due first, across both clocks

    unsigned = await client.post(f"/care-plans/{plans['old']['id']}/sign-off", headers=doctor)
    assert unsigned.status_code == 428
    signed = await client.post(f"/care-plans/{plans['old']['id']}/sign-off", headers=doctor | {"If-Match": 'W/"1"'})
    assert signed.status_code == 200, signed.text
    body = signed.json()
    assert body["version"] == 2 and signed.headers["etag"] == 'W/"2"'
    assert (
        body["sign_off"]["by"] == "dr-rivera"
        and body["sign_off"]["version"] == 2
        and body["sign_off"]["covers_current"]
    )
    later = await client.put(f"/care-plans/{body['id']}", json=PLAN, headers=headers | {"If-Match": 'W/"2"'})
    assert later.json()["sign_off"]["covers_current"] is False and later.json()["sign_off"]["version"] == 2

    items = {i["plan"]["id"] for i in (await client.get("/care-plans/sign-off-due", headers=doctor)).json()["items"]}
    assert items == {plans["signed"]["id"]}
    outsider = bearer(token_for("PCP", teams=("T9",)))
    assert (await client.get("/care-plans/sign-off-due", headers=outsider)).json()["items"] == []
    assert (
        await client.post(f"/care-plans/{plans['fresh']['id']}/sign-off", headers=outsider | {"If-Match": "*"})
    ).status_code == 404
    async with AsyncSession(db) as session:
        actions = (
            (
                await session.execute(
                    select(CarePlanVersion.action)
                    .where(CarePlanVersion.care_plan_id == uuid.UUID(plans["old"]["id"]))
                    .order_by(CarePlanVersion.version)
                )
            )
            .scalars()
            .all()
        )
    assert actions == ["create", "sign-off", "update"]

    # the engagement status file's dates (docs/rosters.md) follow the plan and its sign-off
    today = datetime.now(ZoneInfo("America/New_York")).date()
    async with AsyncSession(db) as session:
        member = (
            await session.execute(select(RosterMember).where(RosterMember.patient_id == old.patient_id))
        ).scalar_one()
    assert (member.care_plan_date, member.pcp_signoff_date) == (today, today)


# --- FHIR -----------------------------------------------------------------------------------------


def fhir_plan(patient_id: uuid.UUID, task_id: uuid.UUID | None = None, **over: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "title": "FHIR plan",
        "subject": {"reference": f"Patient/{patient_id}"},
        "contained": [
            {
                "resourceType": "Goal",
                "id": "goal-g1",
                "lifecycleStatus": "active",
                "description": {"text": "Stay out of the ED"},
                "subject": {"reference": f"Patient/{patient_id}"},
                "expressedBy": {"reference": f"Patient/{patient_id}"},
                "target": [{"dueDate": "2027-03-01"}],
            },
            {
                "resourceType": "CareTeam",
                "id": "careteam",
                "participant": [{"role": [{"text": "BHCF"}], "member": {"display": "Alex"}}],
            },
        ],
        "goal": [{"reference": "#goal-g1"}],
        "careTeam": [{"reference": "#careteam"}],
        "activity": [
            {"detail": {"status": "not-started", "description": "Attend group", "goal": [{"reference": "#goal-g1"}]}}
        ],
    }
    if task_id is not None:
        resource["activity"].append({"reference": {"reference": f"Task/{task_id}", "display": "Call after discharge"}})
    return resource | over


async def test_fhir_careplan_interactions(client: httpx.AsyncClient, db: AsyncEngine, token_for: TokenFor) -> None:
    seeded = await seed_patient(db)
    headers = bhcf(token_for) | {"Content-Type": FHIR_JSON}
    created = await client.post("/fhir/CarePlan", json=fhir_plan(seeded.patient_id, seeded.task_id), headers=headers)
    assert created.status_code == 201, created.text
    assert created.headers["content-type"].startswith(FHIR_JSON)
    resource = FhirCarePlan.model_validate(created.json())
    plan_id = resource.id
    assert created.headers["etag"] == 'W/"1"' and created.headers["location"].endswith(
        f"/CarePlan/{plan_id}/_history/1"
    )
    assert resource.meta.versionId == "1"
    assert resource.activity[1].reference.reference == f"Task/{seeded.task_id}"

    rest = (await client.get(f"/care-plans/{plan_id}", headers=headers)).json()
    assert rest["goals"][0] == {
        "id": "g1",
        "description": "Stay out of the ED",
        "patient_stated": True,
        "target_date": "2027-03-01",
        "status": "active",
        "achievement": None,
    }
    assert rest["activities"][1]["task_id"] == str(seeded.task_id)

    read = await client.get(f"/fhir/CarePlan/{plan_id}", headers=headers)
    assert read.status_code == 200 and read.json() == created.json()
    body = read.json() | {"title": "FHIR plan v2"}
    no_match = await client.put(f"/fhir/CarePlan/{plan_id}", json=body, headers=headers)
    assert no_match.status_code == 428
    OperationOutcome.model_validate(no_match.json())
    assert no_match.json()["issue"][0]["expression"] == ["If-Match"]
    stale = await client.put(f"/fhir/CarePlan/{plan_id}", json=body, headers=headers | {"If-Match": 'W/"9"'})
    assert stale.status_code == 412 and stale.json()["issue"][0]["code"] == "conflict"
    updated = await client.put(f"/fhir/CarePlan/{plan_id}", json=body, headers=headers | {"If-Match": 'W/"1"'})
    assert updated.status_code == 200 and updated.json()["meta"]["versionId"] == "2"
    assert updated.json()["title"] == "FHIR plan v2"
    wrong_id = await client.put(f"/fhir/CarePlan/{uuid.uuid4()}", json=body, headers=headers | {"If-Match": "*"})
    assert wrong_id.status_code == 400 and wrong_id.json()["issue"][0]["expression"] == ["CarePlan.id"]

    history = await client.get(f"/fhir/CarePlan/{plan_id}/_history", headers=headers)
    bundle = Bundle.model_validate(history.json())
    assert bundle.type == "history" and bundle.total == 2
    assert [e.resource.meta.versionId for e in bundle.entry] == ["2", "1"]
    assert [e.request.method for e in bundle.entry] == ["PUT", "POST"]
    v1 = await client.get(f"/fhir/CarePlan/{plan_id}/_history/1", headers=headers)
    assert v1.status_code == 200 and v1.json()["title"] == "FHIR plan" and v1.headers["etag"] == 'W/"1"'
    assert (await client.get(f"/fhir/CarePlan/{plan_id}/_history/3", headers=headers)).status_code == 404

    doctor = pcp(token_for)
    await attribute(db, seeded.patient_id, "T1")
    signed = await client.post(f"/care-plans/{plan_id}/sign-off", headers=doctor | {"If-Match": 'W/"2"'})
    assert signed.status_code == 200
    read = (await client.get(f"/fhir/CarePlan/{plan_id}", headers=doctor)).json()
    (ext,) = read["extension"]
    assert ext["url"] == SIGN_OFF_EXT and {"url": "signer", "valueString": "dr-rivera"} in ext["extension"]


async def test_fhir_careplan_errors_are_operation_outcomes(
    client: httpx.AsyncClient, db: AsyncEngine, token_for: TokenFor
) -> None:
    seeded = await seed_patient(db)
    headers = bhcf(token_for) | {"Content-Type": FHIR_JSON}
    cases = [
        (fhir_plan(seeded.patient_id, intent="order"), 422, "CarePlan.intent"),
        (fhir_plan(uuid.uuid4()), 422, "CarePlan.subject"),
        (fhir_plan(seeded.patient_id, goal=[{"reference": "#goal-x"}]), 422, "CarePlan.goal[0]"),
        (fhir_plan(seeded.patient_id, status="bogus"), 422, "CarePlan.status"),
        (fhir_plan(seeded.patient_id, uuid.uuid4()), 422, "activities.1.task_id"),
        ({"resourceType": "Patient"}, 400, "resourceType"),
    ]
    for body, status, expression in cases:
        response = await client.post("/fhir/CarePlan", json=body, headers=headers)
        assert response.status_code == status, (expression, response.text)
        OperationOutcome.model_validate(response.json())
        assert response.json()["issue"][0]["expression"] == [expression]
    assert (await client.post("/fhir/CarePlan", content=b"{", headers=headers)).status_code == 400
    missing = await client.get(f"/fhir/CarePlan/{uuid.uuid4()}", headers=headers)
    assert missing.status_code == 404 and missing.json()["resourceType"] == "OperationOutcome"
    unauthenticated = await client.get("/fhir/CarePlan")
    assert unauthenticated.status_code == 401 and unauthenticated.json()["resourceType"] == "OperationOutcome"
    assert (
        await client.post("/fhir/CarePlan", json=fhir_plan(seeded.patient_id), headers=pcp(token_for))
    ).status_code == 403


async def test_fhir_careplan_search(client: httpx.AsyncClient, db: AsyncEngine, token_for: TokenFor) -> None:
    a, b = await seed_patient(db), await seed_patient(db)
    outsider = await seed_patient(db, team="T2")
    headers = bhcf(token_for)
    for s in (a, b):
        await create(client, headers, s.patient_id)
        await create(client, headers, s.patient_id, status="draft")
    await create(client, bhcf(token_for, team="T2"), outsider.patient_id)

    everything = await client.get("/fhir/CarePlan", headers=headers)
    assert Bundle.model_validate(everything.json()).total == 4  # the T2 patient's plan is out of scope
    by_subject = (await client.get(f"/fhir/CarePlan?subject=Patient/{a.patient_id}", headers=headers)).json()
    assert by_subject["total"] == 2
    assert {e["resource"]["subject"]["reference"] for e in by_subject["entry"]} == {f"Patient/{a.patient_id}"}
    active = (await client.get(f"/fhir/CarePlan?subject={a.patient_id}&status=active", headers=headers)).json()
    assert active["total"] == 1 and active["entry"][0]["resource"]["status"] == "active"
    either = (await client.get("/fhir/CarePlan?status=draft,completed", headers=headers)).json()
    assert either["total"] == 2
    hidden = (await client.get(f"/fhir/CarePlan?subject={outsider.patient_id}", headers=headers)).json()
    assert hidden["total"] == 0 and "entry" not in hidden

    seen: list[str] = []
    url: str | None = "/fhir/CarePlan?_count=3"
    while url:
        page = Bundle.model_validate((await client.get(url, headers=headers)).json())
        assert page.total == 4
        seen += [e.resource.id for e in page.entry or []]
        nxt = [link.url for link in page.link if link.relation == "next"]
        url = nxt[0].replace("http://carecoord.test", "") if nxt else None
    assert len(seen) == 4 and len(set(seen)) == 4

    bad = await client.get("/fhir/CarePlan?subject=Group/1", headers=headers)
    assert bad.status_code == 400 and bad.json()["issue"][0]["expression"] == ["subject"]
    strict = await client.get("/fhir/CarePlan?foo=1", headers=headers | {"Prefer": "handling=strict"})
    assert strict.status_code == 400
    lenient = (await client.get("/fhir/CarePlan?foo=1&_count=0", headers=headers)).json()
    assert lenient["total"] == 4 and lenient["entry"][0]["search"]["mode"] == "outcome"


async def test_fhir_patient_read_and_search(client: httpx.AsyncClient, db: AsyncEngine, token_for: TokenFor) -> None:
    seeded = await seed_patient(db)
    outsider = await seed_patient(db, team="T2")
    headers = bhcf(token_for)
    read = await client.get(f"/fhir/Patient/{seeded.patient_id}", headers=headers)
    assert read.status_code == 200
    patient = FhirPatient.model_validate(read.json())
    assert patient.identifier[0].system == MRN_SYSTEM and patient.identifier[0].value == seeded.mrn
    assert patient.gender == "female" and str(patient.birthDate) == "1980-02-03"
    assert (await client.get(f"/fhir/Patient/{outsider.patient_id}", headers=headers)).status_code == 404
    assert (await client.get("/fhir/Patient/not-a-uuid", headers=headers)).status_code == 404

    found = (await client.get(f"/fhir/Patient?identifier={MRN_SYSTEM}|{seeded.mrn}", headers=headers)).json()
    Bundle.model_validate(found)
    assert found["total"] == 1 and found["entry"][0]["resource"]["id"] == str(seeded.patient_id)
    assert (await client.get(f"/fhir/Patient?identifier={seeded.mrn}", headers=headers)).json()["total"] == 1
    assert (await client.get(f"/fhir/Patient?identifier=urn:other|{seeded.mrn}", headers=headers)).json()["total"] == 0
    assert (await client.get(f"/fhir/Patient?identifier={MRN_SYSTEM}|", headers=headers)).json()["total"] == 1
    hidden = (await client.get(f"/fhir/Patient?identifier={MRN_SYSTEM}|{outsider.mrn}", headers=headers)).json()
    assert hidden["total"] == 0
    by_id = (await client.get(f"/fhir/Patient?_id={seeded.patient_id},{outsider.patient_id}", headers=headers)).json()
    assert [e["resource"]["id"] for e in by_id["entry"]] == [str(seeded.patient_id)]
    async with AsyncSession(db) as session:
        audits = (
            (await session.execute(select(AuditEvent).where(AuditEvent.resource_type == "Patient"))).scalars().all()
        )
    assert any(str(seeded.patient_id) in a.patient_ids and a.outcome == "0" for a in audits)
    assert any(a.outcome == "4" for a in audits)  # the hidden read is audited as a failure


async def test_a_merge_moves_plans_and_keeps_one_active(
    client: httpx.AsyncClient, db: AsyncEngine, token_for: TokenFor
) -> None:
    survivor, prior = await seed_patient(db), await seed_patient(db)
    headers = bhcf(token_for)
    kept = (await create(client, headers, survivor.patient_id)).json()
    moved = (await create(client, headers, prior.patient_id)).json()
    async with AsyncSession(db) as session, session.begin():
        await move_on_merge(session, prior.patient_id, survivor.patient_id)
    plans = (await client.get(f"/patients/{survivor.patient_id}/care-plans", headers=headers)).json()
    assert {p["id"]: p["status"] for p in plans} == {kept["id"]: "active", moved["id"]: "on-hold"}
    history = (await client.get(f"/care-plans/{moved['id']}/history", headers=headers)).json()
    assert [(v["version"], v["action"], v["actor"]) for v in history] == [
        (2, "merge", "system:merge"),
        (1, "create", "fac-1"),
    ]
    assert history[0]["plan"]["patient_id"] == str(survivor.patient_id)


async def test_racing_writers_one_wins(client: httpx.AsyncClient, db: AsyncEngine, token_for: TokenFor) -> None:
    """Two facilitators save edits of the same version at once: one wins, the other gets 412, and the
    history holds exactly the winner's version (nothing overwritten silently)."""
    seeded = await seed_patient(db)
    headers = bhcf(token_for)
    plan = (await create(client, headers, seeded.patient_id)).json()
    results = await asyncio.gather(
        *(
            client.put(
                f"/care-plans/{plan['id']}",
                json=PLAN | {"title": f"edit {n}"},
                headers=bhcf(token_for, sub=f"fac-{n}") | {"If-Match": 'W/"1"'},
            )
            for n in range(4)
        )
    )
    assert sorted(r.status_code for r in results) == [200, 412, 412, 412]
    winner = next(r.json() for r in results if r.status_code == 200)
    history = (await client.get(f"/care-plans/{plan['id']}/history", headers=headers)).json()
    assert [(v["version"], v["plan"]["title"]) for v in history] == [(2, winner["title"]), (1, "Recovery plan")]


async def test_part2_activities_are_hidden_and_kept(
    client: httpx.AsyncClient, db: AsyncEngine, token_for: TokenFor
) -> None:
    """An activity linked to a 42 CFR Part 2 task (raised from a Part 2 encounter): only a Part 2 role, and
    only while the patient has an active Part 2 consent, may link it or see it; an edit by someone who
    cannot see it does not delete it."""
    seeded = await seed_patient(db)
    sud_stay = await seed_encounter(db, seeded.patient_id, part2=True, hospital_service="SUD")
    sud_task = await add_task(db, seeded.patient_id, "BHCF", "T1", sud_stay.id, part2=True)
    nurse_task = await add_task(db, seeded.patient_id, "RN", "T1")  # another role's task: the plan is the team's
    plain = bhcf(token_for)
    part2 = bearer(token_for("BHCF", "PART2", sub="fac-p2", teams=("T1",)))
    sud_activity = {"description": "SUD follow-up", "task_id": str(sud_task)}
    refused = await create(client, plain, seeded.patient_id, activities=[sud_activity])
    assert refused.status_code == 422 and refused.json()["field"] == "activities.0.task_id"
    nurse_activity = {"description": "med rec", "task_id": str(nurse_task)}
    # the permission alone is not enough: without the patient's consent the Part 2 task reads as unknown
    unconsented = await create(client, part2, seeded.patient_id, activities=[nurse_activity, sud_activity])
    assert unconsented.status_code == 422 and unconsented.json()["field"] == "activities.1.task_id"
    await record_consent(db, seeded.patient_id)
    created = await create(client, part2, seeded.patient_id, activities=[nurse_activity, sud_activity])
    assert created.status_code == 201, created.text
    plan = created.json()
    assert [a["task_id"] for a in plan["activities"]] == [str(nurse_task), str(sud_task)]

    seen = (await client.get(f"/care-plans/{plan['id']}", headers=plain)).json()
    assert [a["task_id"] for a in seen["activities"]] == [str(nurse_task)]
    fhir = (await client.get(f"/fhir/CarePlan/{plan['id']}", headers=plain)).json()
    assert str(sud_task) not in str(fhir)
    history = (await client.get(f"/care-plans/{plan['id']}/history", headers=plain)).json()
    assert str(sud_task) not in str(history)
    searched = (await client.get(f"/fhir/CarePlan?subject={seeded.patient_id}", headers=plain)).json()
    assert searched["total"] == 1 and str(sud_task) not in str(searched)

    # GET, edit, PUT back the document as read (its read-only fields are accepted and ignored)
    edited = await client.put(
        f"/care-plans/{plan['id']}", json=seen | {"title": "edited"}, headers=plain | {"If-Match": 'W/"1"'}
    )
    assert edited.status_code == 200, edited.text
    assert str(sud_task) not in edited.text
    full = (await client.get(f"/care-plans/{plan['id']}", headers=part2)).json()
    assert full["title"] == "edited" and [a["task_id"] for a in full["activities"]] == [str(nurse_task), str(sud_task)]

    # consent revoked: the Part 2 holder no longer sees the activity, and their edit keeps it all the same
    async with AsyncSession(db) as session, session.begin():
        await session.execute(update(Consent).where(Consent.patient_id == seeded.patient_id).values(status="inactive"))
    revoked = (await client.get(f"/care-plans/{plan['id']}", headers=part2)).json()
    assert [a["task_id"] for a in revoked["activities"]] == [str(nurse_task)]
    fhir_revoked = (await client.get(f"/fhir/CarePlan/{plan['id']}", headers=part2)).json()
    assert str(sud_task) not in str(fhir_revoked)
    retitled = await client.put(
        f"/care-plans/{plan['id']}", json=revoked | {"title": "again"}, headers=part2 | {"If-Match": 'W/"2"'}
    )
    assert retitled.status_code == 200, retitled.text
    assert str(sud_task) not in retitled.text
    async with AsyncSession(db) as session, session.begin():
        await session.execute(update(Consent).where(Consent.patient_id == seeded.patient_id).values(status="active"))
    restored = (await client.get(f"/care-plans/{plan['id']}", headers=part2)).json()
    assert restored["title"] == "again"
    assert [a["task_id"] for a in restored["activities"]] == [str(nurse_task), str(sud_task)]
