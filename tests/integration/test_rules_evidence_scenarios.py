"""Medication reconciliation closed by evidence, end to end: ADT and FHIR on the broker -> consumers
-> database -> the task API (issue 5: a Procedure/Observation coded SNOMED 430193006 or CPT II
1111F completes med rec; evidence before the task, a late ADT, still counts; evidence from before the
discharge does not)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import FhirResource
from app.runtime import Runtime
from app.settings import Settings
from tests.conftest import bearer, eventually
from tests.fhir_builder import MRN_SYSTEM, encode, med_rec_observation, med_rec_procedure, transaction
from tests.hl7_builder import adt
from tests.integration.test_rules_scenarios import FACILITATORS, STAY, _running, by_type, send, shipped, tasks

__all__ = ["shipped"]  # the fixture, shared with the rules scenarios

DISCHARGE = dict(discharge_time="20261120140000-0500")  # Fri 2026-11-20 14:00 local


@pytest.fixture
async def service(shipped: Settings, db: AsyncEngine) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    # FHIR subjects name the MRN in the same system the ADT feed's assigning authority maps to.
    settings = shipped.model_copy(update={"assigning_authority_systems": {"GOODHEALTH": MRN_SYSTEM}})
    async with _running(settings) as running:
        yield running


async def post(client: httpx.AsyncClient, token: str, resource: dict[str, Any]) -> httpx.Response:
    path = "/fhir" if resource["resourceType"] == "Bundle" else f"/fhir/{resource['resourceType']}"
    return await client.post(
        path, content=encode(resource), headers={**bearer(token), "Content-Type": "application/fhir+json"}
    )


async def stored(db: AsyncEngine, n: int) -> None:
    async def count() -> bool:
        async with db.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(FhirResource)) or 0) >= n

    assert await eventually(count), "the FHIR consumer did not store the evidence"


async def med_rec_of(client: httpx.AsyncClient, token: str, mrn_tasks: int, status: str) -> list[dict] | None:
    found = by_type(await tasks(client, token)).get("medication-reconciliation", [])
    return found if len(found) == mrn_tasks and all(t["status"] == status for t in found) else None


async def test_procedure_after_discharge_completes_med_rec_and_only_med_rec(
    service: tuple[Runtime, httpx.AsyncClient], db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    runtime, client = service
    staff = token_for(*FACILITATORS)
    await send(runtime, db, adt("A03", control_id="A03", **STAY, **DISCHARGE))
    assert await med_rec_of(client, staff, 1, "ready")
    resp = await post(client, token_for("INTEGRATION", sub="ehr"), med_rec_procedure())
    assert resp.status_code == 202, resp.text
    [med_rec] = await eventually(lambda: med_rec_of(client, staff, 1, "completed")) or [None]
    assert med_rec is not None, "the Procedure did not complete medication reconciliation"
    [contact] = by_type(await tasks(client, staff))["post-discharge-contact"]
    assert contact["status"] == "ready"  # a reconciliation is not the contact

    explained = (await client.get(f"/tasks/{med_rec['id']}/explain", headers=bearer(token_for("RN")))).json()
    completed = explained["history"][-1]
    assert (completed["action"], completed["actor"]) == ("completed", "event:evidence")
    assert "http://snomed.info/sct|430193006" in completed["detail"]["reason"]
    async with db.connect() as conn:
        procedure_id = await conn.scalar(select(FhirResource.id).where(FhirResource.resource_type == "Procedure"))
    assert completed["detail"]["evidence_event_id"] == str(procedure_id)
    assert [h["action"] for h in explained["history"]] == ["created", "completed"]


async def test_late_adt_finds_the_evidence_and_early_evidence_does_not_count(
    service: tuple[Runtime, httpx.AsyncClient], db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    """LATE: CPT II 1111F (an Observation, in a transaction Bundle) arrives before the A03 of the
    discharge it follows: the task is born completed. EARLY: a reconciliation from before this
    discharge (an earlier stay's) leaves the new task open."""
    runtime, client = service
    staff, feed = token_for(*FACILITATORS), token_for("INTEGRATION", sub="ehr")
    bundle = transaction(
        med_rec_observation(mrn="LATE", effective="2026-11-23T11:00:00-05:00"),
        med_rec_procedure(mrn="EARLY", ident="MR-EARLY", performed="2026-11-10T11:00:00-05:00"),
    )
    assert (await post(client, feed, bundle)).status_code == 202
    await stored(db, 2)
    await send(runtime, db, adt("A03", control_id="L-A03", mrn="LATE", visit_number="VL", **DISCHARGE), mrn="LATE")
    await send(runtime, db, adt("A03", control_id="E-A03", mrn="EARLY", visit_number="VE", **DISCHARGE), mrn="EARLY")
    found = by_type(await tasks(client, staff))["medication-reconciliation"]
    assert sorted(t["status"] for t in found) == ["completed", "ready"]
    late = next(t for t in found if t["status"] == "completed")
    history = (await client.get(f"/tasks/{late['id']}/explain", headers=bearer(token_for("RN")))).json()["history"]
    assert [h["action"] for h in history] == ["created", "completed"]
    assert "http://www.ama-assn.org/go/cpt|1111F" in history[-1]["detail"]["reason"]


async def test_evidence_that_does_not_count_is_stored_or_refused(
    service: tuple[Runtime, httpx.AsyncClient], db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    runtime, client = service
    staff, feed = token_for(*FACILITATORS), token_for("INTEGRATION", sub="ehr")
    await send(runtime, db, adt("A03", control_id="A03", **STAY, **DISCHARGE))
    # Not done yet, and performed 31 days after the discharge: stored, completes nothing.
    assert (await post(client, feed, med_rec_procedure(ident="MR-P", status="in-progress"))).status_code == 202
    late = med_rec_procedure(ident="MR-31", performed="2026-12-21T09:00:00-05:00")
    assert (await post(client, feed, late)).status_code == 202
    await stored(db, 2)
    assert await med_rec_of(client, staff, 1, "ready")
    # A Procedure with a code no rule takes as evidence: refused at the front door, naming the element.
    other = med_rec_procedure(ident="MR-X", code="80146002")
    resp = await post(client, feed, other)
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["expression"] == ["Procedure.code"]


async def test_a_procedure_entered_in_error_reopens_med_rec(
    service: tuple[Runtime, httpx.AsyncClient], db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    runtime, client = service
    staff, feed = token_for(*FACILITATORS), token_for("INTEGRATION", sub="ehr")
    await send(runtime, db, adt("A03", control_id="A03", **STAY, **DISCHARGE))
    assert (await post(client, feed, med_rec_procedure())).status_code == 202
    assert await eventually(lambda: med_rec_of(client, staff, 1, "completed"))
    assert (await post(client, feed, med_rec_procedure(status="entered-in-error"))).status_code == 202
    [reopened] = await eventually(lambda: med_rec_of(client, staff, 1, "ready")) or [None]
    assert reopened is not None, "the withdrawn Procedure left med rec completed"
    history = (await client.get(f"/tasks/{reopened['id']}/explain", headers=bearer(token_for("RN")))).json()
    assert [h["action"] for h in history["history"]] == ["created", "completed", "reopened"]
