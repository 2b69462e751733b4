"""Quality measures on a seeded scenario driven through the real pipeline: roster import, ADT on the
broker, FHIR screenings, medication-reconciliation Procedures and a consult note through the front
door, a facilitator completing a task over the API. The measures (GET /measures, drill-downs, CSV)
must count exactly what the definitions in docs/measures.md say, per caller scope, team, role and
Part 2 consent.

Times are relative to now (D = 20 days ago) so every windowed case is judged (none pending) and the
period [today - 40 days, today] holds them all."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import AuditEvent, Task
from app.runtime import Runtime
from app.settings import Settings
from tests.access_builder import record_consent
from tests.conftest import bearer, eventually
from tests.fhir_builder import MRN_SYSTEM, consult_note, encode, med_rec_procedure, observation
from tests.hl7_builder import adt
from tests.integration.test_fhir_clinical import patient_id_for
from tests.integration.test_rules_scenarios import _running, send, shipped
from tests.roster_builder import csv_text, member

__all__ = ["shipped"]

NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
D = NOW - timedelta(days=20)  # the discharges
TODAY = NOW.astimezone(ZoneInfo("America/New_York")).date()
PERIOD = {"period_start": (TODAY - timedelta(days=40)).isoformat(), "period_end": TODAY.isoformat()}
TEAM_A, TEAM_B = "Practice A", "Practice B"
PRACTICE = {1: TEAM_A, 2: TEAM_A, 3: TEAM_A, 4: TEAM_B, 5: TEAM_B, 6: TEAM_A, 7: TEAM_A}


def hl7(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")


def mrn(n: int) -> str:
    return f"MRN{n:06d}"


def discharge(n: int, **kw: Any) -> str:
    """Patient n's inpatient stay, admitted 3 days before D and discharged at D."""
    return adt(
        "A03",
        control_id=f"P{n}-A03",
        mrn=mrn(n),
        family=f"FAM{n}",
        given=f"GIVEN{n}",
        visit_number=f"V{n}",
        message_time=hl7(D),
        event_time=hl7(D),
        admit_time=hl7(D - timedelta(days=3)),
        discharge_time=hl7(D),
        **kw,
    )


def office_visit(n: int, at: datetime, **kw: Any) -> str:
    return adt(
        "A04",
        control_id=f"P{n}-A04",
        mrn=mrn(n),
        family=f"FAM{n}",
        given=f"GIVEN{n}",
        visit_number=f"V{n}-OFFICE",
        patient_class="O",
        message_time=hl7(at),
        event_time=hl7(at),
        admit_time=hl7(at),
        **kw,
    )


@pytest.fixture
async def service(shipped: Settings, db: AsyncEngine) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    settings = shipped.model_copy(
        update={"require_attribution": True, "assigning_authority_systems": {"GOODHEALTH": MRN_SYSTEM}}
    )
    async with _running(settings) as running:
        yield running


async def _tasks(db: AsyncEngine) -> list[Task]:
    async with db.connect() as conn:
        return list((await conn.execute(select(Task))).all())  # type: ignore[arg-type]


async def seed(runtime: Runtime, client: httpx.AsyncClient, db: AsyncEngine, token_for: Callable[..., str]) -> None:
    """The scenario (docs/measures.md walks through the same cases):
    P1 A: admitted D-3, discharged D; office visit D+3 (its A04 arrives now); med rec performed D+1.
    P2 A: discharged D; the PMC completes the contact now (day 20); med rec performed D+5.
    P3 A: discharged D; nothing done; a positive PHQ-9 yesterday (referral left open).
    P4 B: discharged D; office visit D+2; a positive AUDIT-C (Part 2) yesterday.
    P5 B: admitted 2 hours ago (in hospital); a positive PHQ-9, loop closed by a consult note.
    P6 A: psychiatric stay discharged D; BH office visit D+10 (FUH 30-day, not 7-day).
    P7 A: substance-use (Part 2) stay discharged D; nothing done."""
    roster = csv_text(
        [member(n, identifier_system=MRN_SYSTEM, identifier_value=mrn(n), practice=PRACTICE[n]) for n in PRACTICE]
    )
    upload = await client.post(
        "/rosters/imports",
        headers=bearer(token_for("DATA")),
        files={"file": ("roster.csv", roster.encode(), "text/csv")},
        data={"as_of": (TODAY - timedelta(days=60)).isoformat()},
    )
    assert upload.status_code == 202, upload.text

    async def imported() -> bool:
        job = await client.get(f"/rosters/imports/{upload.json()['id']}", headers=bearer(token_for("DATA")))
        return job.json()["status"] == "completed"

    assert await eventually(imported)

    admit = adt(
        "A01",
        control_id="P1-A01",
        mrn=mrn(1),
        family="FAM1",
        given="GIVEN1",
        visit_number="V1",
        message_time=hl7(D - timedelta(days=3)),
        event_time=hl7(D - timedelta(days=3)),
        admit_time=hl7(D - timedelta(days=3)),
    )
    await send(runtime, db, admit, discharge(1), office_visit(1, D + timedelta(days=3)), mrn=mrn(1))
    await send(runtime, db, discharge(2), mrn=mrn(2))
    await send(runtime, db, discharge(3), mrn=mrn(3))
    await send(runtime, db, discharge(4), office_visit(4, D + timedelta(days=2)), mrn=mrn(4))
    in_hospital = adt(
        "A01",
        control_id="P5-A01",
        mrn=mrn(5),
        family="FAM5",
        given="GIVEN5",
        visit_number="V5",
        message_time=hl7(NOW - timedelta(hours=2)),
        event_time=hl7(NOW - timedelta(hours=2)),
        admit_time=hl7(NOW - timedelta(hours=2)),
    )
    await send(runtime, db, in_hospital, mrn=mrn(5))
    await send(
        runtime,
        db,
        discharge(6, hospital_service="PSY"),
        office_visit(6, D + timedelta(days=10), hospital_service="PSY"),
        mrn=mrn(6),
    )
    await send(runtime, db, discharge(7, diagnoses=(("F10.20", "I10"),)), mrn=mrn(7))

    feed = token_for("INTEGRATION", sub="ehr")

    async def post(resource: dict[str, Any]) -> None:
        resp = await client.post(
            f"/fhir/{resource['resourceType']}",
            content=encode(resource),
            headers={**bearer(feed), "Content-Type": "application/fhir+json"},
        )
        assert resp.status_code == 202, resp.text

    yesterday = (NOW - timedelta(days=1)).isoformat()
    await post(med_rec_procedure(mrn=mrn(1), ident="MR-1", performed=(D + timedelta(days=1)).isoformat()))
    await post(med_rec_procedure(mrn=mrn(2), ident="MR-2", performed=(D + timedelta(days=5)).isoformat()))
    await post(observation(mrn=mrn(3), ident="PHQ9-3", effective=yesterday))
    await post(observation("75626-2", mrn=mrn(4), ident="AUDC-4", value={"valueInteger": 9}, effective=yesterday))
    await post(observation(mrn=mrn(5), ident="PHQ9-5", effective=yesterday))

    async def settled() -> bool:
        found = await _tasks(db)
        done = {(t.type, t.status) for t in found}
        return (
            sum(t.type == "bh-referral" for t in found) == 3
            and sum(t.type == "medication-reconciliation" and t.status == "completed" for t in found) == 2
            and ("fuh-follow-up", "completed") in done
        )

    assert await eventually(settled), sorted((t.type, t.status, t.role) for t in await _tasks(db))
    await post(consult_note(mrn=mrn(5), ident="NOTE-5", date=NOW.isoformat()))

    async def closed() -> bool:
        return any(t.type == "bh-referral" and t.status == "completed" for t in await _tasks(db))

    assert await eventually(closed), "the consult note did not close the referral loop"

    # P2's contact: the PMC completes it over the API, today (day 20 after discharge).
    p2 = await patient_id_for(db, mrn(2))
    [contact] = [t for t in await _tasks(db) if t.patient_id == p2 and t.type == "post-discharge-contact"]
    done = await client.post(
        f"/tasks/{contact.id}/complete", json={"outcome": "reached"}, headers=bearer(token_for("PMC", teams=(TEAM_A,)))
    )
    assert done.status_code == 200, done.text

    for n in (4, 7):  # Part 2 consents: P4 (AUDIT-C) and P7 (SUD stay)
        pid = await patient_id_for(db, mrn(n))
        assert pid is not None
        await record_consent(db, pid)


async def measures(client: httpx.AsyncClient, token: str, **params: str) -> dict[str, dict[str, Any]]:
    resp = await client.get("/measures", params={**PERIOD, **params}, headers=bearer(token))
    assert resp.status_code == 200, resp.text
    return {m["key"]: m for m in resp.json()["measures"]}


def counts(found: dict[str, dict[str, Any]], key: str) -> tuple[int, int]:
    return found[key]["numerator"], found[key]["denominator"]


async def names(client: httpx.AsyncClient, token: str, key: str, part: str, **params: str) -> list[str]:
    resp = await client.get(
        f"/measures/{key}/patients", params={**PERIOD, "part": part, **params}, headers=bearer(token)
    )
    assert resp.status_code == 200, resp.text
    return [item["family_name"] for item in resp.json()["items"]]


async def test_measures_on_a_seeded_scenario(
    service: tuple[Runtime, httpx.AsyncClient], db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    runtime, client = service
    await seed(runtime, client, db, token_for)
    supervisor = token_for("SUPERVISOR", sub="sup", teams=(TEAM_A, TEAM_B))
    part2_supervisor = token_for("SUPERVISOR", "PART2", sub="sud-sup", teams=(TEAM_A, TEAM_B))

    found = await measures(client, supervisor)
    assert list(found) == [
        "post-discharge-contact-7d",
        "medication-reconciliation-72h",
        "post-ed-contact-7d",
        "fuh-7d",
        "fuh-30d",
        "bh-referral-loop-closure",
        "admission-notification-timeliness",
        "screening-reach",
        "overdue-tasks",
    ]
    contact = found["post-discharge-contact-7d"]
    # P1 (visit D+3, its message 17 days late) and P4 (visit D+2) / P1, P2, P3, P4, P6; P7 is Part 2.
    assert (contact["numerator"], contact["denominator"], contact["rate"], contact["target"]) == (2, 5, 0.4, 0.5)
    assert contact["meets_target"] is False and contact["extras"]["pending"] == 0
    # P1's reconciliation performed D+1 (posted now) counts; P2's D+5 does not; P3, P4, P6 not done.
    assert counts(found, "medication-reconciliation-72h") == (1, 5)
    assert found["post-ed-contact-7d"]["rate"] is None and counts(found, "post-ed-contact-7d") == (0, 0)
    assert counts(found, "fuh-7d") == (0, 1) and counts(found, "fuh-30d") == (1, 1)
    loop = found["bh-referral-loop-closure"]
    assert counts(found, "bh-referral-loop-closure") == (1, 2)  # P5 closed, P3 open; P4's AUDIT-C is Part 2
    assert loop["extras"]["open"] == 1 and loop["extras"]["median_days"] == 0.0
    # P5 notified 2 hours after admission; P1's A01 applied 23 days after it.
    assert counts(found, "admission-notification-timeliness") == (1, 2)
    assert counts(found, "screening-reach") == (2, 7)  # P3, P5 of 7 members; P4's AUDIT-C is Part 2

    # The overdue snapshot matches the worklist summary (another code path over the same scope).
    summary = (await client.get("/worklists/summary", headers=bearer(supervisor))).json()["queues"]
    overdue = found["overdue-tasks"]
    assert counts(found, "overdue-tasks") == (sum(q["overdue"] for q in summary), sum(q["open"] for q in summary))
    by_role = {r["role"]: r for r in overdue["extras"]["by_role"]}
    assert by_role["RN"]["overdue"] == 3  # P3, P4, P6 med recs (P7's is Part 2)
    assert "PCF" not in by_role and by_role["PMC"]["overdue"] == 1  # P3's contact

    # Part 2 permission with consent: P7's stay and P4's AUDIT-C referral and screen count.
    with_part2 = await measures(client, part2_supervisor)
    assert counts(with_part2, "post-discharge-contact-7d") == (2, 6)
    assert counts(with_part2, "medication-reconciliation-72h") == (1, 6)
    assert counts(with_part2, "bh-referral-loop-closure") == (1, 3)
    assert counts(with_part2, "screening-reach") == (3, 7)

    # Team and role filters.
    team_a = await measures(client, supervisor, team=TEAM_A)
    assert counts(team_a, "post-discharge-contact-7d") == (1, 4)  # P1 / P1, P2, P3, P6
    assert counts(team_a, "screening-reach") == (1, 5)  # P3 / P1, P2, P3, P6, P7
    team_b = await measures(client, supervisor, team=TEAM_B)
    assert counts(team_b, "post-discharge-contact-7d") == (1, 1)
    assert counts(team_b, "admission-notification-timeliness") == (1, 1)
    pmc_role = await measures(client, supervisor, role="PMC")
    assert counts(pmc_role, "post-discharge-contact-7d") == (2, 4)  # P6's contact is BHCF (BH population)
    assert counts(pmc_role, "medication-reconciliation-72h") == (0, 0)
    assert pmc_role["screening-reach"]["extras"] == {"role_filter_applied": False}

    # A facilitator sees their own roles and teams only.
    pmc = token_for("PMC", sub="pmc-a", teams=(TEAM_A,))
    mine = await measures(client, pmc)
    assert counts(mine, "post-discharge-contact-7d") == (1, 3)  # P1 / P1, P2, P3
    assert counts(mine, "medication-reconciliation-72h") == (0, 0)
    refused = await client.get("/measures", params={**PERIOD, "role": "RN"}, headers=bearer(pmc))
    assert refused.status_code == 403 and refused.json()["field"] == "role"
    refused = await client.get("/measures", params={**PERIOD, "team": TEAM_B}, headers=bearer(pmc))
    assert refused.status_code == 403 and refused.json()["field"] == "team"

    # Drill-downs: the patients (and their task and stay ids) behind each number.
    assert await names(client, supervisor, "post-discharge-contact-7d", "numerator") == ["FAM1", "FAM4"]
    assert await names(client, supervisor, "post-discharge-contact-7d", "denominator") == [
        "FAM1",
        "FAM2",
        "FAM3",
        "FAM4",
        "FAM6",
    ]
    assert await names(client, part2_supervisor, "post-discharge-contact-7d", "denominator") == [
        "FAM1",
        "FAM2",
        "FAM3",
        "FAM4",
        "FAM6",
        "FAM7",
    ]
    assert await names(client, supervisor, "fuh-30d", "numerator") == ["FAM6"]
    assert await names(client, supervisor, "screening-reach", "numerator") == ["FAM3", "FAM5"]
    assert await names(client, part2_supervisor, "screening-reach", "numerator") == ["FAM3", "FAM4", "FAM5"]
    assert await names(client, supervisor, "post-discharge-contact-7d", "numerator", team=TEAM_A) == ["FAM1"]
    listed = await client.get(
        "/measures/post-discharge-contact-7d/patients",
        params={**PERIOD, "part": "numerator"},
        headers=bearer(supervisor),
    )
    body = listed.json()
    assert (body["count"], body["truncated"]) == (2, False)
    tasks_by_id = {t.id: t for t in await _tasks(db)}
    for item in body["items"]:
        [task_id] = item["task_ids"]
        task = tasks_by_id[uuid.UUID(task_id)]
        assert task.type == "post-discharge-contact" and str(task.patient_id) == item["patient_id"]
        assert item["event_ids"] == [str(task.encounter_id)]
    capped = await client.get(
        "/measures/post-discharge-contact-7d/patients",
        params={**PERIOD, "part": "denominator", "limit": "2"},
        headers=bearer(supervisor),
    )
    assert (capped.json()["count"], capped.json()["truncated"]) == (2, True)

    # Every read is audited; a drill-down with the patients it listed.
    async with db.connect() as conn:
        audits = (await conn.execute(select(AuditEvent).where(AuditEvent.actor == "sup"))).all()
    drill = [a for a in audits if a.request.startswith("GET /measures/fuh-30d/patients")]
    assert [a.patient_ids for a in drill] == [[str(await patient_id_for(db, mrn(6)))]]
    assert any(a.request.startswith("GET /measures?") and a.resource_type == "MeasureReport" for a in audits)

    # CSV, by Accept or by format=csv.
    as_csv = await client.get("/measures", params=PERIOD, headers={**bearer(supervisor), "Accept": "text/csv"})
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    rows = {r["key"]: r for r in csv.DictReader(io.StringIO(as_csv.text))}
    assert (rows["post-discharge-contact-7d"]["numerator"], rows["post-discharge-contact-7d"]["rate"]) == (
        "2",
        "0.4000",
    )
    assert rows["post-discharge-contact-7d"]["meets_target"] == "false"
    drill_csv = await client.get(
        "/measures/screening-reach/patients",
        params={**PERIOD, "part": "numerator", "format": "csv"},
        headers=bearer(supervisor),
    )
    assert [r["family_name"] for r in csv.DictReader(io.StringIO(drill_csv.text))] == ["FAM3", "FAM5"]


async def test_measure_requests_are_checked(
    service: tuple[Runtime, httpx.AsyncClient], token_for: Callable[..., str]
) -> None:
    _runtime, client = service
    supervisor = bearer(token_for("SUPERVISOR", teams=(TEAM_A,)))
    backwards = await client.get(
        "/measures", params={"period_start": "2026-02-01", "period_end": "2026-01-01"}, headers=supervisor
    )
    assert backwards.status_code == 422 and backwards.json()["field"] == "period_end"
    assert backwards.headers["content-type"] == "application/problem+json"
    bad_date = await client.get("/measures", params={"period_start": "yesterday"}, headers=supervisor)
    assert bad_date.status_code == 422 and bad_date.json()["field"] == "period_start"
    too_long = await client.get(
        "/measures", params={"period_start": "2020-01-01", "period_end": "2026-01-01"}, headers=supervisor
    )
    assert too_long.status_code == 422 and too_long.json()["field"] == "period_end"
    unknown = await client.get("/measures/no-such-measure/patients", headers=supervisor)
    assert unknown.status_code == 404 and unknown.json()["field"] == "key"
    bad_part = await client.get("/measures/fuh-7d/patients", params={"part": "both"}, headers=supervisor)
    assert bad_part.status_code == 422 and bad_part.json()["field"] == "part"
    feed = await client.get("/measures", headers=bearer(token_for("INTEGRATION")))
    assert feed.status_code == 403
    defaults = await client.get("/measures", headers=supervisor)
    assert defaults.status_code == 200
    body = defaults.json()
    assert body["period_end"] == TODAY.isoformat()
    assert body["period_start"] == (TODAY - timedelta(days=29)).isoformat()
