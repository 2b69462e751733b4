"""The BH referral loop end to end: a positive screen (FHIR Observation) raises the referral; the
facilitator records it sent (POST /tasks/{id}/business-status); a BH visit (ADT A04) is the first
visit; a consult note (FHIR DocumentReference, LOINC 11488-4) closes the loop. Broker -> consumers
-> database -> API, as the rules scenarios."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.runtime import Runtime
from app.settings import Settings
from tests.conftest import bearer, eventually
from tests.fhir_builder import MRN_SYSTEM, consult_note, encode, observation
from tests.hl7_builder import adt
from tests.integration.test_rules_scenarios import FACILITATORS, _running, by_type, local, send, shipped, tasks

__all__ = ["shipped"]  # the fixture, shared with the rules scenarios


@pytest.fixture
async def service(shipped: Settings, db: AsyncEngine) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    settings = shipped.model_copy(update={"assigning_authority_systems": {"GOODHEALTH": MRN_SYSTEM}})
    async with _running(settings) as running:
        yield running


async def post_fhir(client: httpx.AsyncClient, token: str, resource: dict[str, Any]) -> None:
    resp = await client.post(
        f"/fhir/{resource['resourceType']}",
        content=encode(resource),
        headers={**bearer(token), "Content-Type": "application/fhir+json"},
    )
    assert resp.status_code == 202, resp.text


async def referral(client: httpx.AsyncClient, token: str, business_status: str) -> dict | None:
    found = by_type(await tasks(client, token)).get("bh-referral", [])
    return found[0] if len(found) == 1 and found[0]["business_status"] == business_status else None


async def milestone(client: httpx.AsyncClient, token: str, task_id: str, target: str) -> httpx.Response:
    return await client.post(
        f"/tasks/{task_id}/business-status", json={"business_status": target, "note": "faxed"}, headers=bearer(token)
    )


async def test_referral_loop_from_screen_to_summary(
    service: tuple[Runtime, httpx.AsyncClient], db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    runtime, client = service
    feed, staff, bhcf = token_for("INTEGRATION", sub="ehr"), token_for(*FACILITATORS), token_for("BHCF", sub="bea")

    await post_fhir(client, feed, observation(mrn="MRN12345", ident="PHQ9-1"))  # PHQ-9 14, 2026-11-20 10:15
    task = await eventually(lambda: referral(client, staff, "requested"))
    assert task is not None, "the positive screen raised no referral"
    assert (task["status"], task["role"], task["priority"]) == ("ready", "BHCF", "routine")
    assert local(task["due_at"]) == "Mon 2026-11-23 10:15"  # referral sent within 3 days

    # Milestones in order only; another role's facilitator cannot see the task at all.
    refused = await milestone(client, bhcf, task["id"], "scheduled")
    assert refused.status_code == 409 and refused.json()["field"] == "business_status"
    assert (await milestone(client, token_for("PMC"), task["id"], "sent")).status_code == 404
    assert (await milestone(client, bhcf, task["id"], "requested")).status_code == 422
    before = datetime.now(UTC)
    sent = await milestone(client, bhcf, task["id"], "sent")
    assert sent.status_code == 200, sent.text
    body = sent.json()
    assert (body["business_status"], body["status"]) == ("sent", "in-progress")
    due = datetime.fromisoformat(body["due_at"])
    assert before + timedelta(days=29) < due < datetime.now(UTC) + timedelta(days=31)  # loop closed in 30 days
    assert body["due_basis"]["loop"]["closed_within_days_of_sent"] == 30
    assert (await milestone(client, bhcf, task["id"], "sent")).status_code == 409  # already sent

    # The BH provider's telehealth visit (F32.1 depression) is the first visit.
    visit = adt(
        "A04",
        control_id="BH-A04",
        visit_number="VBH",
        patient_class="O",
        event_time="20261125090000-0500",
        admit_time="20261125090000-0500",
        diagnoses=(("F32.1", "I10"),),
    )
    await send(runtime, db, visit)
    assert await eventually(lambda: referral(client, staff, "first-visit")), "the BH visit did not count"

    # The consult note closes the loop.
    await post_fhir(client, feed, consult_note(mrn="MRN12345"))
    closed = await eventually(lambda: referral(client, staff, "summary-received"))
    assert closed is not None and closed["status"] == "completed"
    explained = (await client.get(f"/tasks/{task['id']}/explain", headers=bearer(bhcf))).json()
    steps = [(h["action"], h["detail"].get("business_status")) for h in explained["history"]]
    assert steps == [
        ("created", None),
        ("business-status", ["requested", "sent"]),
        ("business-status", ["sent", "first-visit"]),
        ("completed", ["first-visit", "summary-received"]),
    ]
    assert explained["history"][1]["actor"] == "user:bea" and explained["history"][1]["detail"]["note"] == "faxed"
    assert (await milestone(client, bhcf, task["id"], "summary-received")).status_code == 409  # closed

    # The note entered in error: the loop is open again at its first visit.
    await post_fhir(client, feed, consult_note(mrn="MRN12345", status="entered-in-error"))
    reopened = await eventually(lambda: referral(client, staff, "first-visit"))
    assert reopened is not None and reopened["status"] == "in-progress"


async def test_urgent_referral_after_a_suicide_risk_screen(
    service: tuple[Runtime, httpx.AsyncClient], db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    """A positive PHQ-9 whose item 9 flags risk: the referral is urgent and its loop closes in 7 days."""
    _runtime, client = service
    feed, staff, bhcf = token_for("INTEGRATION", sub="ehr"), token_for(*FACILITATORS), token_for("BHCF")
    phq9 = observation(mrn="MRN12345", ident="PHQ9-R")
    phq9["component"] = [{"code": {"coding": [{"system": "http://loinc.org", "code": "44260-8"}]}, "valueInteger": 2}]
    await post_fhir(client, feed, phq9)
    task = await eventually(lambda: referral(client, staff, "requested"))
    assert task is not None and task["priority"] == "urgent"
    body = (await milestone(client, bhcf, task["id"], "sent")).json()
    assert body["due_basis"]["loop"] == body["due_basis"]["loop"] | {"urgent": True, "closed_within_days_of_sent": 7}
    assert datetime.fromisoformat(body["due_at"]) < datetime.now(UTC) + timedelta(days=7, minutes=1)
