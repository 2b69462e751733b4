"""42 CFR Part 2 leaks found by the outside review (issue 19, section 3): Part 2 data stays invisible
to callers without the permission in explain answers too, not only in reads."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.api.tasks import NEUTRAL_SUPERSEDED
from app.careplans.model import MAX_ITEMS
from app.db.models import Encounter, InboundEvent, TaskHistory, utcnow
from app.runtime import Runtime
from app.state.tasks import SUPERSEDED_BY_KEY
from tests.access_builder import record_consent
from tests.careplan_seed import add_task, seed_patient
from tests.conftest import bearer
from tests.hl7_builder import adt
from tests.integration.test_fhir_encounter_api import seed as seed_encounter
from tests.integration.test_rules_scenarios import FACILITATORS, by_type, send, service, shipped, tasks

__all__ = ["service", "shipped"]


def hl7_at(days_ago: float) -> str:
    """An HL7 v2 timestamp `days_ago` before the test's own now."""
    return (utcnow() - timedelta(days=days_ago)).strftime("%Y%m%d%H%M%S+0000")


async def test_explain_of_a_task_superseded_by_a_part2_readmission_is_neutral(
    service: tuple[Runtime, httpx.AsyncClient],
    db: AsyncEngine,
    token_for: Callable[..., str],
) -> None:
    runtime, client = service
    await send(
        runtime,
        db,
        adt("A03", control_id="P2L-A03", visit_number="V1", admit_time=hl7_at(6), discharge_time=hl7_at(4)),
        adt(
            "A01",
            control_id="P2L-A01",
            visit_number="V2",
            event_time=hl7_at(1),
            admit_time=hl7_at(1),
            diagnoses=(("F10.20", "I10"),),  # the readmission is a substance-use stay: Part 2
        ),
    )
    pmc = token_for("PMC")
    contacts = by_type(await tasks(client, token_for(*FACILITATORS)))["post-discharge-contact"]
    assert [t["status"] for t in contacts] == ["cancelled"], contacts  # superseded; the Part 2 stay's own is hidden
    old = await client.get(f"/tasks/{contacts[0]['id']}/explain", headers=bearer(pmc))
    assert old.status_code == 200, old.text
    body = old.json()
    assert body["superseded_by_encounter_id"] is None
    assert "readmission" not in old.text.lower() and "P2L-A01" not in old.text
    assert body["history"][-1]["detail"] == {"reason": "closed by a later encounter"}
    # A caller who may see the Part 2 stay (permission and consent) still gets the full reason.
    holder = token_for("PMC", "PART2", sub="sud-holder")
    patient = contacts[0]["patient"]["id"]
    supervisor = token_for("SUPERVISOR", sub="sup-p2l")
    assert (await client.post(f"/patients/{patient}/consents", json={}, headers=bearer(supervisor))).status_code == 201
    full = (await client.get(f"/tasks/{contacts[0]['id']}/explain", headers=bearer(holder))).json()
    assert full["superseded_by_encounter_id"] is not None
    assert full["history"][-1]["detail"]["reason"].startswith("superseded by readmission")


# --- (a) care-plan writes by someone who cannot see the Part 2 activities -----------------------------


async def _plan_with_hidden_activity(
    client: httpx.AsyncClient, db: AsyncEngine, token_for: Callable[..., str]
) -> tuple[dict[str, Any], uuid.UUID, uuid.UUID]:
    """A plan a Part 2 holder wrote: a plain activity and one (id `x1`) backing a Part 2 task. Returns the
    plan as read by a BHCF without the Part 2 permission, the patient and the Part 2 task."""
    seeded = await seed_patient(db)
    sud_stay = await seed_encounter(db, seeded.patient_id, part2=True, hospital_service="SUD")
    sud_task = await add_task(db, seeded.patient_id, "BHCF", "T1", sud_stay.id, part2=True)
    await record_consent(db, seeded.patient_id)
    holder = bearer(token_for("BHCF", "PART2", sub="fac-p2", teams=("T1",)))
    activities = [
        {"id": "x1", "description": "SUD follow-up", "task_id": str(sud_task)},
        {"id": "x2", "description": "Call after discharge", "task_id": str(seeded.task_id)},
    ]
    created = await client.post(
        f"/patients/{seeded.patient_id}/care-plans",
        json={"title": "plan", "activities": activities},
        headers=holder,
    )
    assert created.status_code == 201, created.text
    plain = bearer(token_for("BHCF", sub="fac-1", teams=("T1",)))
    seen = (await client.get(f"/care-plans/{created.json()['id']}", headers=plain)).json()
    assert [a["id"] for a in seen["activities"]] == ["x2"]
    return seen, seeded.patient_id, sud_task


def _answer(response: httpx.Response, plan_id: str) -> str:
    """A refusal's body without what differs between two requests by design (the instance URL)."""
    body = {k: v for k, v in response.json().items() if k not in ("instance", "id")}
    return json.dumps(body, sort_keys=True).replace(plan_id, "PLAN")


async def _holder_view(client: httpx.AsyncClient, token_for: Callable[..., str], plan_id: str) -> dict[str, Any]:
    holder = bearer(token_for("BHCF", "PART2", sub="fac-p2", teams=("T1",)))
    read = await client.get(f"/care-plans/{plan_id}", headers=holder)
    assert read.status_code == 200, read.text
    return dict(read.json())


@pytest.mark.api_only
async def test_rest_care_plan_update_cannot_collide_with_a_hidden_activity(
    client: httpx.AsyncClient, db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    seen, _, sud_task = await _plan_with_hidden_activity(client, db, token_for)
    plan_id = seen["id"]
    plain = bearer(token_for("BHCF", sub="fac-1", teams=("T1",)))

    # Naming the hidden task answers exactly as naming a task that does not exist.
    def with_task(task_id: uuid.UUID) -> dict[str, Any]:
        return seen | {"activities": [*seen["activities"], {"description": "mine", "task_id": str(task_id)}]}

    hidden = await client.put(f"/care-plans/{plan_id}", json=with_task(sud_task), headers=plain | {"If-Match": "*"})
    unknown = await client.put(
        f"/care-plans/{plan_id}", json=with_task(uuid.uuid4()), headers=plain | {"If-Match": "*"}
    )
    assert hidden.status_code == unknown.status_code == 422, hidden.text
    assert _answer(hidden, plan_id) == _answer(unknown, plan_id)
    assert "only one activity" not in hidden.text and str(sud_task) not in hidden.text

    # The hidden activity's id is free for the writer: no duplicate-id error, and the write keeps it.
    mine = {"id": "x1", "description": "Weekly check-in"}
    written = await client.put(
        f"/care-plans/{plan_id}",
        json=seen | {"activities": [*seen["activities"], mine]},
        headers=plain | {"If-Match": 'W/"1"'},
    )
    assert written.status_code == 200, written.text
    assert [(a["id"], a["description"]) for a in written.json()["activities"]] == [
        ("x2", "Call after discharge"),
        ("x1", "Weekly check-in"),
    ]
    assert str(sud_task) not in written.text and "SUD" not in written.text
    full = await _holder_view(client, token_for, plan_id)
    kept = [a for a in full["activities"] if a["task_id"] == str(sud_task)]
    assert [(a["description"], a["id"] not in ("x1", "x2")) for a in kept] == [("SUD follow-up", True)]
    assert len({a["id"] for a in full["activities"]}) == 3

    # A writer's full share of activities is taken, the hidden one kept besides (and still readable).
    many = [{"description": f"step {i}"} for i in range(MAX_ITEMS)]
    crowded = await client.put(
        f"/care-plans/{plan_id}", json=seen | {"activities": many}, headers=plain | {"If-Match": 'W/"2"'}
    )
    assert crowded.status_code == 200, crowded.text
    full = await _holder_view(client, token_for, plan_id)
    assert len(full["activities"]) == MAX_ITEMS + 1
    assert full["activities"][-1]["task_id"] == str(sud_task)


@pytest.mark.api_only
async def test_fhir_care_plan_update_cannot_collide_with_a_hidden_activity(
    client: httpx.AsyncClient, db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    seen, _, sud_task = await _plan_with_hidden_activity(client, db, token_for)
    plan_id = seen["id"]
    plain = bearer(token_for("BHCF", sub="fac-1", teams=("T1",))) | {"Content-Type": "application/fhir+json"}
    resource = (await client.get(f"/fhir/CarePlan/{plan_id}", headers=plain)).json()
    assert str(sud_task) not in json.dumps(resource)

    def with_activity(activity: dict[str, Any]) -> dict[str, Any]:
        return resource | {"activity": [*resource.get("activity", []), activity]}

    def task_ref(task_id: uuid.UUID) -> dict[str, Any]:
        return {"reference": {"reference": f"Task/{task_id}", "display": "mine"}}

    url = f"/fhir/CarePlan/{plan_id}"
    hidden = await client.put(url, json=with_activity(task_ref(sud_task)), headers=plain | {"If-Match": "*"})
    unknown = await client.put(url, json=with_activity(task_ref(uuid.uuid4())), headers=plain | {"If-Match": "*"})
    assert hidden.status_code == unknown.status_code == 422, hidden.text
    assert _answer(hidden, plan_id) == _answer(unknown, plan_id)
    assert "only one activity" not in hidden.text and str(sud_task) not in hidden.text

    mine = {"id": "x1", "detail": {"status": "not-started", "description": "Weekly check-in"}}
    written = await client.put(url, json=with_activity(mine), headers=plain | {"If-Match": 'W/"1"'})
    assert written.status_code == 200, written.text
    assert [a["id"] for a in written.json()["activity"]] == ["x2", "x1"]
    assert str(sud_task) not in written.text
    full = await _holder_view(client, token_for, plan_id)
    kept = [a for a in full["activities"] if a["task_id"] == str(sud_task)]
    assert [(a["description"], a["id"] not in ("x1", "x2")) for a in kept] == [("SUD follow-up", True)]


async def test_a_voided_part2_readmission_and_reworded_reasons_stay_neutral(
    service: tuple[Runtime, httpx.AsyncClient],
    db: AsyncEngine,
    token_for: Callable[..., str],
) -> None:
    """The hiding follows the encounter each history entry names (SUPERSEDED_BY_KEY), not the wording:
    after the Part 2 readmission is voided (A11) the task is open again and no longer names it, yet both
    entries it wrote stay neutral; a reason worded without "readmission" is hidden all the same."""
    runtime, client = service
    await send(
        runtime,
        db,
        adt("A03", control_id="P2V-A03", visit_number="V1", admit_time=hl7_at(6), discharge_time=hl7_at(4)),
        adt(
            "A01",
            control_id="P2V-A01",
            visit_number="V2",
            event_time=hl7_at(1),
            admit_time=hl7_at(1),
            diagnoses=(("F10.20", "I10"),),
        ),
    )
    await send(runtime, db, adt("A11", control_id="P2V-A11", visit_number="V2", event_time=hl7_at(0.5)))
    contacts = by_type(await tasks(client, token_for(*FACILITATORS)))["post-discharge-contact"]
    assert [t["status"] for t in contacts] == ["ready"], contacts
    task_id = contacts[0]["id"]
    async with AsyncSession(db) as session:
        stay = (await session.execute(select(Encounter).where(Encounter.visit_number == "V2"))).scalar_one()
        event_ids = [str(e) for e in (await session.execute(select(InboundEvent.id))).scalars()]
    pmc = token_for("PMC")

    async def explained() -> httpx.Response:
        response = await client.get(f"/tasks/{task_id}/explain", headers=bearer(pmc))
        assert response.status_code == 200, response.text
        return response

    shown = await explained()
    steps = shown.json()["history"]
    assert [h["action"] for h in steps] == ["created", "cancelled", "reopened"]
    assert [h["detail"] for h in steps[1:]] == [{"reason": NEUTRAL_SUPERSEDED}] * 2
    assert "readmission" not in shown.text.lower() and str(stay.id) not in shown.text
    assert not [e for e in event_ids if e in json.dumps(steps[1:])]

    # Reword the stored reasons: the hiding does not depend on them.
    async with AsyncSession(db) as session, session.begin():
        rows = (await session.execute(select(TaskHistory).where(TaskHistory.task_id == uuid.UUID(task_id)))).scalars()
        for row in rows:
            if row.detail and SUPERSEDED_BY_KEY in row.detail:
                row.detail = row.detail | {"reason": "closed: SUD stay at 4W"}
    reworded = await explained()
    assert "SUD" not in reworded.text
    assert [h["detail"] for h in reworded.json()["history"][1:]] == [{"reason": NEUTRAL_SUPERSEDED}] * 2
