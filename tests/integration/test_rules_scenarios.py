"""The shipped rules, end to end: ADT on the broker -> consumer -> database -> the task API.

Each scenario is one a facilitator would recognise (DESIGN.md rule table; issue 5), with the real
broker and database. Times are America/New_York (the test facility's zone)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api.app import create_app
from app.db.models import Encounter, InboundEvent
from app.messaging.keys import patient_partition_key
from app.runtime import Runtime
from app.settings import DEFAULT_RULES_FILE, Settings
from app.state.tasks import escalate_overdue
from app.tasks.lifecycle import STATUSES
from tests.conftest import bearer, eventually, wait_until_assigned
from tests.fhir_builder import MRN_SYSTEM, encode, observation
from tests.hl7_builder import adt
from tests.integration.test_adt_pipeline import produce
from tests.roster_builder import csv_text, member

FACILITATORS = ("PMC", "PCF", "BHCF", "RN")


@pytest.fixture
def shipped(settings: Settings) -> Settings:
    return settings.model_copy(update={"rules_file": DEFAULT_RULES_FILE, "escalation_interval_s": 0})


@asynccontextmanager
async def _running(settings: Settings) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    async with Runtime(settings) as runtime:
        await wait_until_assigned(runtime)
        app = create_app(runtime=runtime)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            yield runtime, client


@pytest.fixture
async def service(shipped: Settings, db: AsyncEngine) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    async with _running(shipped) as running:
        yield running


async def send(
    runtime: Runtime, db: AsyncEngine, *messages: str, mrn: str = "MRN12345", distinct: int | None = None
) -> None:
    """Publish one patient's messages in order (same key, same partition) and wait until the
    `distinct` new ones (default: all) are applied."""
    async with db.connect() as conn:
        before = int(await conn.scalar(select(func.count()).select_from(InboundEvent)) or 0)
    await produce(
        runtime.settings,
        *(m.encode() for m in messages),
        key=patient_partition_key("urn:hl7v2:aa:GOODHEALTH", mrn),
    )

    async def applied() -> bool:
        async with db.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(InboundEvent)) or 0) >= before + (
                distinct or len(messages)
            )

    assert await eventually(applied), "the consumer did not apply the messages"


async def tasks(client: httpx.AsyncClient, token: str) -> list[dict]:
    resp = await client.get(
        "/tasks", params={"role": ",".join(FACILITATORS), "status": ",".join(sorted(STATUSES))}, headers=bearer(token)
    )
    assert resp.status_code == 200, resp.text
    return resp.json()["items"]


def by_type(items: list[dict]) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for item in items:
        found.setdefault(item["type"], []).append(item)
    return found


def local(iso: str) -> str:
    from zoneinfo import ZoneInfo

    return (
        datetime.fromisoformat(iso.replace("Z", "+00:00"))
        .astimezone(ZoneInfo("America/New_York"))
        .strftime("%a %Y-%m-%d %H:%M")
    )


STAY = dict(visit_number="V1", admit_time="20261115083000-0500")


async def test_inpatient_discharge_raises_contact_and_med_rec_with_explanations(
    service: tuple[Runtime, httpx.AsyncClient], db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    runtime, client = service
    await send(
        runtime,
        db,
        adt("A01", control_id="A01", event_time="20261115083000-0500", **STAY),
        adt("A03", control_id="A03", discharge_time="20261120140000-0500", **STAY),
    )
    found = by_type(await tasks(client, token_for(*FACILITATORS)))
    assert sorted(found) == ["admission-notification", "medication-reconciliation", "post-discharge-contact"]
    [contact], [med_rec], [in_reach] = (
        found["post-discharge-contact"],
        found["medication-reconciliation"],
        found["admission-notification"],
    )
    assert contact["role"] == "PMC" and local(contact["due_at"]) == "Fri 2026-11-27 14:00"
    assert med_rec["role"] == "RN" and local(med_rec["due_at"]) == "Mon 2026-11-23 14:00"
    # Admitted Sunday morning: in-reach by close of business Monday. The discharge then ended it.
    assert local(in_reach["due_at"]) == "Mon 2026-11-16 17:00"
    assert in_reach["status"] == "cancelled"

    explained = await client.get(f"/tasks/{contact['id']}/explain", headers=bearer(token_for("PMC")))
    assert explained.status_code == 200, explained.text
    body = explained.json()
    assert body["rule"] == {"id": "post-discharge-contact", "version": "2"} and body["rule_version_current"]
    assert "7 days" in body["rule_description"]
    assert [e["message_type"] for e in body["triggering_events"]] == ["ADT^A03"]
    assert body["due_basis"]["anchor"] == "discharge" and body["due_basis"]["days"] == 7
    assert body["route_basis"] == {"population": "adult", "role": "PMC", "team": None}
    assert [h["action"] for h in body["history"]] == ["created"]
    # Another role's task, or an unknown one: the same 404.
    assert (await client.get(f"/tasks/{contact['id']}/explain", headers=bearer(token_for("BHCF")))).status_code == 404


async def test_duplicate_a03_and_a03_before_a01_change_nothing(
    service: tuple[Runtime, httpx.AsyncClient], db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    runtime, client = service
    a01 = adt("A01", control_id="A01", event_time="20261115083000-0500", **STAY)
    a03 = adt("A03", control_id="A03", **STAY)
    await send(runtime, db, a03, a03, a01, distinct=2)  # the discharge first, then its resend, then the admission
    found = by_type(await tasks(client, token_for(*FACILITATORS)))
    assert [t["status"] for t in found["post-discharge-contact"]] == ["ready"]
    assert [t["status"] for t in found["medication-reconciliation"]] == ["ready"]
    # The late A01 still describes a stay that has ended: its in-reach is moot.
    assert [t["status"] for t in found.get("admission-notification", [])] in ([], ["cancelled"])
    async with db.connect() as conn:
        assert (await conn.execute(select(Encounter.status))).scalars().all() == ["finished"]


async def test_readmission_within_7_days_supersedes_open_work_and_raises_new(
    service: tuple[Runtime, httpx.AsyncClient], db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    runtime, client = service
    await send(
        runtime,
        db,
        adt("A03", control_id="S1-A03", visit_number="V1", discharge_time="20261116100000-0500"),
        adt(
            "A01",
            control_id="S2-A01",
            visit_number="V2",
            event_time="20261119090000-0500",
            admit_time="20261119090000-0500",
        ),
        adt(
            "A03",
            control_id="S2-A03",
            visit_number="V2",
            admit_time="20261119090000-0500",
            discharge_time="20261122100000-0500",
        ),
    )
    found = by_type(await tasks(client, token_for(*FACILITATORS)))
    contacts = sorted(found["post-discharge-contact"], key=lambda t: t["due_at"])
    assert [t["status"] for t in contacts] == ["cancelled", "ready"]
    assert [t["status"] for t in sorted(found["medication-reconciliation"], key=lambda t: t["due_at"])] == [
        "cancelled",
        "ready",
    ]
    old = (await client.get(f"/tasks/{contacts[0]['id']}/explain", headers=bearer(token_for("PMC")))).json()
    assert old["history"][-1]["detail"]["reason"].startswith("superseded by readmission")
    assert old["superseded_by_encounter_id"] == contacts[1]["encounter_id"]
    new = (await client.get(f"/tasks/{contacts[1]['id']}/explain", headers=bearer(token_for("PMC")))).json()
    assert new["supersedes"] == [contacts[0]["id"]], "the new stay's contact links back to the one it replaces"


async def test_death_during_the_stay_raises_no_follow_up(
    service: tuple[Runtime, httpx.AsyncClient], db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    runtime, client = service
    await send(
        runtime,
        db,
        adt("A01", control_id="A01", event_time="20261115083000-0500", **STAY),
        adt("A03", control_id="A03", discharge_disposition="20", **STAY),  # UB-04 20: expired
    )
    found = by_type(await tasks(client, token_for(*FACILITATORS)))
    assert "post-discharge-contact" not in found and "medication-reconciliation" not in found
    assert [(t["status"]) for t in found["admission-notification"]] == ["cancelled"]


async def test_cancelled_discharge_cancels_its_tasks(
    service: tuple[Runtime, httpx.AsyncClient], db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    runtime, client = service
    await send(
        runtime,
        db,
        adt("A03", control_id="A03", **STAY),
        adt("A13", control_id="A13", event_time="20261120150000-0500", **STAY),
    )
    found = by_type(await tasks(client, token_for(*FACILITATORS)))
    for kind in ("post-discharge-contact", "medication-reconciliation"):
        assert [t["status"] for t in found[kind]] == ["cancelled"], kind


async def test_routing_pediatric_and_psychiatric_discharges(
    service: tuple[Runtime, httpx.AsyncClient], db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    runtime, client = service
    await send(
        runtime, db, adt("A03", control_id="KID", mrn="KID", visit_number="VK", birth_date="20150301"), mrn="KID"
    )
    await send(
        runtime, db, adt("A03", control_id="PSY", mrn="PSY", visit_number="VP", hospital_service="PSY"), mrn="PSY"
    )
    found = await tasks(client, token_for(*FACILITATORS))
    roles = {(t["patient"]["birth_date"], t["type"]): t["role"] for t in found}
    assert roles[("2015-03-01", "post-discharge-contact")] == "PCF"
    assert roles[("1970-04-12", "post-discharge-contact")] == "BHCF"
    assert roles[("1970-04-12", "fuh-follow-up")] == "BHCF"
    assert roles[("1970-04-12", "medication-reconciliation")] == "RN"
    assert ("2015-03-01", "fuh-follow-up") not in roles


async def test_follow_up_visit_completes_the_contact_even_when_its_adt_arrives_first(
    service: tuple[Runtime, httpx.AsyncClient], db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    runtime, client = service
    office = dict(patient_class="O", event_time="20261118090000-0500", admit_time="20261118090000-0500")
    # Patient A: discharge, then the office visit. Patient B: the office visit's A04 arrives first.
    await send(
        runtime,
        db,
        adt("A03", control_id="A-A03", mrn="A", visit_number="VA", discharge_time="20261116100000-0500"),
        adt("A04", control_id="A-A04", mrn="A", visit_number="VA2", **office),
        mrn="A",
    )
    await send(
        runtime,
        db,
        adt("A04", control_id="B-A04", mrn="B", visit_number="VB2", **office),
        adt("A03", control_id="B-A03", mrn="B", visit_number="VB", discharge_time="20261116100000-0500"),
        mrn="B",
    )
    found = by_type(await tasks(client, token_for(*FACILITATORS)))
    assert [t["status"] for t in found["post-discharge-contact"]] == ["completed", "completed"]
    # A visit is not a medication reconciliation.
    assert [t["status"] for t in found["medication-reconciliation"]] == ["ready", "ready"]


async def test_evidence_before_the_discharge_does_not_count(
    service: tuple[Runtime, httpx.AsyncClient], db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    runtime, client = service
    await send(
        runtime,
        db,
        adt(
            "A04",
            control_id="EARLY",
            visit_number="V0",
            patient_class="O",
            event_time="20261112090000-0500",
            admit_time="20261112090000-0500",
        ),
        adt("A03", control_id="A03", visit_number="V1", discharge_time="20261116100000-0500"),
    )
    [contact] = by_type(await tasks(client, token_for(*FACILITATORS)))["post-discharge-contact"]
    assert contact["status"] == "ready"


async def test_attempts_fail_the_task_and_overdue_work_reaches_the_supervisor(
    service: tuple[Runtime, httpx.AsyncClient], db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    runtime, client = service
    await send(runtime, db, adt("A03", control_id="A03", **STAY))
    contact = by_type(await tasks(client, token_for(*FACILITATORS)))["post-discharge-contact"][0]
    pmc = bearer(token_for("PMC", sub="pmc-1"))
    url = f"/tasks/{contact['id']}/attempts"
    bad = await client.post(url, json={"outcome": "busy"}, headers=pmc)
    assert bad.status_code == 422 and bad.json()["field"].endswith("outcome")
    statuses = []
    for outcome in ("no-answer", "left-message", "wrong-number"):
        resp = await client.post(url, json={"outcome": outcome, "note": "tried the home number"}, headers=pmc)
        assert resp.status_code == 200, resp.text
        statuses.append((resp.json()["status"], resp.json()["failed_attempts"]))
    assert statuses == [("in-progress", 1), ("in-progress", 2), ("failed", 3)]
    again = await client.post(url, json={"outcome": "reached"}, headers=pmc)
    assert again.status_code == 409 and again.json()["field"] == "status"
    explained = (await client.get(f"/tasks/{contact['id']}/explain", headers=pmc)).json()
    assert explained["history"][-1]["detail"]["reason"] == "unable to reach"
    assert (await client.post(url, json={"outcome": "reached"}, headers=bearer(token_for("BHCF")))).status_code == 404

    # The med-rec task is due 72 hours after discharge; a week later the escalation pass finds it.
    async with runtime.sessions() as session, session.begin():
        assert await escalate_overdue(session, datetime.now(UTC) + timedelta(days=400)) == 1
    async with runtime.sessions() as session, session.begin():
        assert await escalate_overdue(session, datetime.now(UTC) + timedelta(days=400)) == 0, "once per task"
    supervisor = bearer(token_for("SUPERVISOR"))
    queue = await client.get("/tasks/escalated", headers=supervisor)
    assert queue.status_code == 200, queue.text
    [escalated] = queue.json()["items"]
    assert escalated["type"] == "medication-reconciliation" and escalated["priority"] == "urgent"
    assert (await client.get("/tasks/escalated", headers=pmc)).status_code == 403


async def test_a_changed_rules_file_changes_behaviour_without_code(
    shipped: Settings, db: AsyncEngine, token_for: Callable[..., str], tmp_path: Path
) -> None:
    """The CMS TCM variant: contact within 2 business days. A Friday-evening discharge before a
    Monday holiday lands on Wednesday at close of business."""
    rules = DEFAULT_RULES_FILE.read_text()
    rules = rules.replace("enabled = false\n", "enabled = true\n", 1)  # the TCM variant is the only one off
    rules = rules.replace(
        'id = "post-discharge-contact"\nversion = "2"\n',
        'id = "post-discharge-contact"\nversion = "2"\nenabled = false\n',
    )
    rules = rules.replace("closed = []", "closed = [2027-01-04]")  # an office closure on Monday
    path = tmp_path / "tcm.toml"
    path.write_text(rules)
    # The calendar case is fixed (New Year's Day 2027), possibly ahead of the clock: let the sender's times stand.
    fixed_calendar = {"rules_file": path, "event_time_max_skew_s": 10 * 366 * 86400}
    async with _running(shipped.model_copy(update=fixed_calendar)) as (runtime, client):
        friday_evening = dict(visit_number="V1", discharge_time="20270101190000-0500", event_time="20270101190500-0500")
        await send(runtime, db, adt("A03", control_id="FRI", **friday_evening))
        [contact] = by_type(await tasks(client, token_for(*FACILITATORS)))["post-discharge-contact"]
        assert contact["rule"]["id"] == "post-discharge-contact-tcm"
        # Fri Jan 1 (New Year's Day itself) 19:00; Sat, Sun weekend; Mon Jan 4 closed; Tue 5 = day 1, Wed 6 = day 2.
        assert local(contact["due_at"]) == "Wed 2027-01-06 17:00"
        assert contact["due_basis"]["skipped"] == [
            "2027-01-02 weekend",
            "2027-01-03 weekend",
            "2027-01-04 organisation closure",
        ]


async def test_only_attributed_members_get_tasks_and_the_team_is_their_practice(
    shipped: Settings, db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    """require_attribution (the default): a stranger's discharge is kept but raises nothing; once the
    ACO's roster names the MRN, the next discharge raises work for the member's practice."""
    async with _running(shipped.model_copy(update={"require_attribution": True})) as (runtime, client):
        await send(runtime, db, adt("A03", control_id="A03", **STAY))
        assert await tasks(client, token_for(*FACILITATORS)) == []
        async with db.connect() as conn:
            assert (await conn.execute(select(Encounter.status))).scalars().all() == ["finished"]

        roster = csv_text(
            [member(1, identifier_value="MRN12345", practice="GOODHEALTH CLINIC", birth_date="1970-04-12")]
        )
        upload = await client.post(
            "/rosters/imports",
            headers=bearer(token_for("DATA")),
            files={"file": ("roster.csv", roster.encode(), "text/csv")},
            data={"as_of": "2026-11-02"},
        )
        assert upload.status_code == 202, upload.text

        async def imported() -> bool:
            job = await client.get(f"/rosters/imports/{upload.json()['id']}", headers=bearer(token_for("DATA")))
            return job.json()["status"] == "completed"

        assert await eventually(imported)
        await send(
            runtime,
            db,
            adt(
                "A03",
                control_id="A03-2",
                visit_number="V2",
                admit_time="20261121083000-0500",
                discharge_time="20261122140000-0500",
            ),
        )
        # Team scoping: the practice's facilitators see the tasks, another practice's do not.
        assert await tasks(client, token_for(*FACILITATORS, teams=("OTHER PRACTICE",))) == []
        found = by_type(await tasks(client, token_for(*FACILITATORS, teams=("GOODHEALTH CLINIC",))))
        [contact] = found["post-discharge-contact"]
        assert (contact["role"], contact["team"]) == ("PMC", "GOODHEALTH CLINIC")
        assert [t["team"] for t in found["medication-reconciliation"]] == ["GOODHEALTH CLINIC"]
        assert [t["type"] for t in found["new-member-outreach"]] == ["new-member-outreach"]


async def test_screenings_raise_bh_referral_and_suicide_risk_work_and_a_retraction_cancels_it(
    shipped: Settings, db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    """FHIR Observations through the front door: a positive PHQ-9 -> BH referral (BHCF, 3 days);
    item 9 sent on its own -> same-day urgent response (RN); the PHQ-9 entered in error -> cancelled."""
    feed = token_for("INTEGRATION", sub="ehr")
    settings = shipped.model_copy(update={"assigning_authority_systems": {"GOODHEALTH": MRN_SYSTEM}})
    async with _running(settings) as (_runtime, client):

        async def post(resource: dict) -> None:
            resp = await client.post(
                "/fhir/Observation",
                content=encode(resource),
                headers={**bearer(feed), "Content-Type": "application/fhir+json"},
            )
            assert resp.status_code == 202, resp.text

        async def settled(n: int) -> list[dict] | None:
            found = await tasks(client, token_for(*FACILITATORS))
            return found if len(found) == n else None

        await post(observation(mrn="SCREENED", ident="PHQ9-1"))  # PHQ-9 total 14: positive
        [referral] = await eventually(lambda: settled(1)) or [None]
        assert referral is not None
        assert (referral["type"], referral["role"], referral["status"]) == ("bh-referral", "BHCF", "ready")
        assert local(referral["due_at"]) == "Mon 2026-11-23 10:15"  # 3 days after 10:15 on the 20th
        await post(observation("44260-8", mrn="SCREENED", ident="ITEM9-1", value={"valueInteger": 2}))
        found = by_type(await eventually(lambda: settled(2)) or [])
        [risk] = found["suicide-risk-response"]
        assert (risk["role"], risk["priority"], local(risk["due_at"])) == ("RN", "urgent", "Fri 2026-11-20 23:59")
        # A second positive screen while the referral is open raises no second referral.
        await post(observation("70274-6", mrn="SCREENED", ident="GAD7-1", value={"valueInteger": 15}))
        await post(observation(mrn="SCREENED", ident="PHQ9-1", status="entered-in-error"))

        async def referral_cancelled() -> bool:
            # ... and the positive GAD-7 that stood down behind it now raises the referral (issue 5: a
            # retraction re-runs the rules on the remaining screens).
            found = by_type(await tasks(client, token_for(*FACILITATORS)))["bh-referral"]
            return sorted(t["status"] for t in found) == ["cancelled", "ready"]

        assert await eventually(referral_cancelled)
