"""No patient data in logs: every record logged (DEBUG and up, through the production JSON formatter)
while an ADT feed with names and MRNs, a bad ADT message, a FHIR Observation with a score, a roster
import and the API reads of all of it run end to end is scanned for the names, identifiers, birth
dates, contact details and clinical values that went in."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable, Iterator

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.db.models import RejectedEvent, RosterMember, ScreeningEvent, Task
from app.logging_config import configure_logging
from app.runtime import Runtime
from app.settings import Settings
from tests.conftest import bearer, eventually
from tests.fhir_builder import encode, observation
from tests.hl7_builder import adt
from tests.integration.test_adt_pipeline import produce
from tests.roster_builder import csv_text, member

FAMILY, GIVEN, MRN, DOB = "QUILLFEATHER", "OCTAVIANA", "MRN-PRIV-8642", "19610923"
OBS_ID, SCORE = "OBS-PRIV-5151", 23
ROSTER_FAMILY, ROSTER_GIVEN, ROSTER_MRN = "ZANZIBARIAN", "PERPETUA", "MRN-ROSTER-7531"
PHONE, ADDRESS = "555-0199", "77 Privet Lane, Springfield, MA, 01101"


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging("DEBUG")
    stream = io.StringIO()
    root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    yield stream
    root.handlers[:], root.level = saved[0], saved[1]


async def count(db: AsyncEngine, model: type, n: int) -> bool:
    async with AsyncSession(db) as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0) >= n


async def test_logs_carry_no_patient_data(
    captured_logs: io.StringIO,
    runtime: Runtime,
    settings: Settings,
    client: httpx.AsyncClient,
    db: AsyncEngine,
    token_for: Callable[..., str],
) -> None:
    feed = bearer(token_for("INTEGRATION"))
    # ADT over the broker and over HTTP, names and MRN in PID
    await produce(settings, adt("A03", mrn=MRN, family=FAMILY, given=GIVEN, birth_date=DOB).encode(), key=b"k")
    second = adt("A03", control_id="MSG-PRIV-2", mrn=MRN, family=FAMILY, given=GIVEN, birth_date=DOB, visit_number="V2")
    http = await client.post("/ingest/hl7v2", content=second.encode(), headers={**feed, "Content-Type": "text/plain"})
    assert http.status_code == 202, http.text
    # a message rejected for a bad birth date: the reason names the field, never the value
    bad = adt("A03", control_id="MSG-PRIV-3", mrn=MRN, family=FAMILY, given=GIVEN, birth_date=f"{FAMILY}X")
    await produce(settings, bad.encode(), key=b"k")
    # a FHIR Observation with a score, over HTTP
    obs = observation(mrn=MRN, ident=OBS_ID, value={"valueInteger": SCORE})
    posted = await client.post(
        "/fhir/Observation", content=encode(obs), headers={**feed, "Content-Type": "application/fhir+json"}
    )
    assert posted.status_code == 202, posted.text
    # a roster with names, identifiers and contact details
    roster = csv_text(
        [member(1, family=ROSTER_FAMILY, given=ROSTER_GIVEN, identifier_value=ROSTER_MRN, phone=PHONE, address=ADDRESS)]
    )
    upload = await client.post(
        "/rosters/imports",
        headers=bearer(token_for("DATA")),
        files={"file": ("roster.csv", roster.encode(), "text/csv")},
        data={"as_of": "2026-11-02"},
    )
    assert upload.status_code == 202, upload.text

    assert await eventually(lambda: count(db, Task, 1))
    assert await eventually(lambda: count(db, ScreeningEvent, 1))
    assert await eventually(lambda: count(db, RosterMember, 1))
    assert await eventually(lambda: count(db, RejectedEvent, 1))
    # reading it all back through the API logs nothing about the patient either
    reader = bearer(token_for("PMC", "BHCF", "SUPERVISOR"))
    listed = await client.get("/tasks", headers=reader)
    assert listed.status_code == 200 and FAMILY in listed.text  # the data is there, for the API caller
    patient_id = listed.json()["items"][0]["patient"]["id"]
    assert (await client.get("/fhir/Observation", params={"patient": patient_id}, headers=reader)).status_code == 200
    assert (await client.get(f"/patients/{patient_id}/screenings", headers=reader)).status_code == 200
    admin = bearer(token_for("ADMIN", "PART2"))
    dead = (await client.get("/admin/dead-letters", headers=admin)).json()["items"]
    assert (await client.get(f"/admin/dead-letters/{dead[0]['id']}", headers=admin)).status_code == 200

    text = captured_logs.getvalue()
    assert text.count("\n") >= 5, "the scenario logged (the capture works)"
    forbidden = [FAMILY, GIVEN, MRN, DOB, "1961-09-23", OBS_ID, ROSTER_FAMILY, ROSTER_GIVEN, ROSTER_MRN, PHONE]
    forbidden += [ADDRESS, "Privet", FAMILY.title(), GIVEN.title()]
    leaked = [value for value in forbidden if value.lower() in text.lower()]
    assert not leaked, f"patient data in logs: {leaked}"
    # the clinical value: no record carries the score, under any key or in any message
    assert not re.search(rf'"(value|score|valueInteger|result)[A-Za-z_]*":\s*"?{SCORE}\b', text)
    assert not re.search(rf"\b(score|value)\D{{0,3}}{SCORE}\b", text, re.IGNORECASE)
