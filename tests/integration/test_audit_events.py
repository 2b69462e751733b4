"""The audit trail as FHIR R4 AuditEvent: auditors search by patient, agent and date with paging;
every resource validates with fhir.resources; reads and writes of patient data are on record with
who, what, when, outcome and client."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.auditevent import AuditEvent as FhirAuditEvent
from fhir.resources.R4B.bundle import Bundle
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.db.models import Patient
from app.runtime import Runtime
from tests.access_builder import scope_task
from tests.conftest import bearer

pytestmark = pytest.mark.api_only  # seeds the database itself; no events are consumed


async def patient_with_task(db: AsyncEngine) -> uuid.UUID:
    async with AsyncSession(db, expire_on_commit=False) as session, session.begin():
        patient = Patient(family_name="AUDITED")
        session.add(patient)
        await session.flush()
        session.add(scope_task(patient.id, "BHCF"))
        return patient.id


def searchset(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body = response.json()
    Bundle.model_validate(body)
    for entry in body.get("entry", []):
        FhirAuditEvent.model_validate(entry["resource"])
    return body


async def test_auditors_search_the_trail_by_patient_agent_and_date(
    runtime: Runtime, client: httpx.AsyncClient, db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    patient = await patient_with_task(db)
    other = await patient_with_task(db)
    reader = {**bearer(token_for("BHCF", sub="bhcf-7")), "User-Agent": "worklist/1.0"}
    for _ in range(3):
        assert (await client.get(f"/patients/{patient}/screenings", headers=reader)).status_code == 200
    assert (await client.get(f"/patients/{other}/screenings", headers=reader)).status_code == 200
    auditor = bearer(token_for("AUDITOR", sub="auditor-1"))

    body = searchset(await client.get("/fhir/AuditEvent", params={"patient": f"Patient/{patient}"}, headers=auditor))
    assert body["total"] == 3
    event = body["entry"][0]["resource"]
    assert event["action"] == "R" and event["outcome"] == "0"
    assert event["agent"][0]["who"]["identifier"]["value"] == "bhcf-7"
    assert event["agent"][0]["network"]["address"] and event["agent"][0]["role"] == [{"text": "BHCF"}]
    patients = [e["what"]["reference"] for e in event["entity"] if "what" in e]
    assert patients == [f"Patient/{patient}"]
    request = next(e for e in event["entity"] if "what" not in e)
    assert request["description"] == f"GET /patients/{patient}/screenings"
    assert request["detail"] == [{"type": "user-agent", "valueString": "worklist/1.0"}]

    # paging: follow next links until every match was seen once
    seen: list[str] = []
    url: str | None = "/fhir/AuditEvent?agent=bhcf-7&_count=2"
    pages = 0
    while url:
        page = searchset(await client.get(url, headers=auditor))
        assert page["total"] == 4
        seen += [e["resource"]["id"] for e in page.get("entry", [])]
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
        pages += 1
    assert pages == 2 and len(seen) == len(set(seen)) == 4

    assert searchset(await client.get("/fhir/AuditEvent?date=lt2000-01-01", headers=auditor))["total"] == 0
    recent = searchset(await client.get("/fhir/AuditEvent?agent=bhcf-7&date=ge2026-01-01", headers=auditor))
    assert recent["total"] == 4
    assert searchset(await client.get(f"/fhir/AuditEvent?patient={uuid.uuid4()}", headers=auditor))["total"] == 0

    # the auditor's own searches are on record too
    own = searchset(await client.get("/fhir/AuditEvent?agent=auditor-1", headers=auditor))
    assert own["total"] >= 6 and own["entry"][0]["resource"]["entity"][-1]["name"] == "AuditEvent"

    refused = await client.get("/fhir/AuditEvent", headers=bearer(token_for("SUPERVISOR", "ADMIN")))
    assert refused.status_code == 403 and refused.json()["resourceType"] == "OperationOutcome"
    bad = await client.get("/fhir/AuditEvent?date=xx2026", headers=auditor)
    assert bad.status_code == 400 and bad.json()["issue"][0]["expression"] == ["date"]
