"""No patient data in logs: every record logged (DEBUG and up, through the production JSON formatter)
while an ADT feed with names and MRNs, a bad ADT message, a FHIR Observation with a score, a roster
import and the API reads of all of it run end to end is scanned for the names, identifiers, birth
dates, contact details and clinical values that went in."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.api.auth import mint_token
from app.db.models import RejectedEvent, RosterMember, ScreeningEvent, Task
from app.logging_config import configure_logging
from app.runtime import Runtime
from app.settings import Settings
from tests.conftest import bearer, eventually
from tests.fhir_builder import encode, observation
from tests.hl7_builder import adt
from tests.integration.test_adt_pipeline import produce
from tests.integration.test_cli import CARECOORD, clean_env
from tests.integration.test_http_limits_served import running_server
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


@pytest.fixture
def server(
    settings: Settings, db: AsyncEngine, database_url: str, tmp_path: Path
) -> Iterator[tuple[int, Path, subprocess.Popen[str]]]:
    with running_server(settings, database_url, tmp_path) as running:
        yield running


def test_the_access_log_of_a_real_server_names_route_templates_only(
    server: tuple[int, Path, subprocess.Popen[str]], settings: Settings
) -> None:
    """uvicorn's own access log printed every path and query string: identifiers in URLs reached the log."""
    port, log, _ = server
    token = mint_token(settings, "tester", ["SUPERVISOR", "PMC"], [], 600)
    task = uuid.uuid4()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=bearer(token), timeout=30) as client:
        assert client.get(f"/tasks/{task}", params={"patient": MRN}).status_code == 404
        assert client.get("/fhir/Patient", params={"identifier": f"urn:mrn|{MRN}", "family": FAMILY}).status_code < 500
        assert client.get("/tasks", params={"q": f"{FAMILY} {DOB}"}).status_code < 500
    text = log.read_text()
    assert '"logger": "carecoord.access"' in text and '"route": "/tasks/{task_id}"' in text  # the access log works
    leaked = [value for value in (MRN, FAMILY, DOB, str(task)) if value.lower() in text.lower()]
    assert not leaked, f"identifiers in the access log: {leaked}"


async def test_cli_output_carries_no_patient_data(db: AsyncEngine, database_url: str, tmp_path: Path) -> None:
    """A roster import from the command line, logging at DEBUG: names, identifiers, birth dates and contact
    details go into the database, not to the terminal (a bad row is reported by line and field)."""
    roster = tmp_path / "roster.csv"
    good = member(
        1, family=ROSTER_FAMILY, given=ROSTER_GIVEN, identifier_value=ROSTER_MRN, phone=PHONE, address=ADDRESS
    )
    bad = member(2, family=FAMILY, given=GIVEN, identifier_value=MRN, birth_date=f"{FAMILY}X")
    roster.write_text(csv_text([good, bad]))
    done = run_cli(["roster", "import", str(roster), "--as-of", "2026-11-02"], tmp_path, database_url)
    output = done.stdout + done.stderr
    assert "rows" in output, output[-2000:]  # it ran and reported
    forbidden = [ROSTER_FAMILY, ROSTER_GIVEN, ROSTER_MRN, PHONE, "Privet", FAMILY, GIVEN, MRN]
    leaked = [value for value in forbidden if value.lower() in output.lower()]
    assert not leaked, f"patient data in CLI output: {leaked}"


def run_cli(args: list[str], cwd: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    env = clean_env(CARECOORD_DATABASE_URL=database_url, CARECOORD_AUTO_MIGRATE="false", CARECOORD_LOG_LEVEL="DEBUG")
    return subprocess.run([CARECOORD, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
