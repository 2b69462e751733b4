"""Worklists and task actions over HTTP on the real database (SQLite, or PostgreSQL by env).

Tasks are seeded straight into the database (the rules are tested elsewhere); one test runs the
whole path: ADT on the real broker -> consumer -> task -> a facilitator works it through the API.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import AuditEvent, Encounter, Patient, Task, TaskHistory
from app.messaging.keys import patient_partition_key
from app.runtime import Runtime
from tests.conftest import bearer, eventually
from tests.hl7_builder import adt
from tests.integration.test_adt_pipeline import produce


async def seed(
    runtime: Runtime,
    *,
    role: str = "PMC",
    team: str | None = "T1",
    status: str = "ready",
    due_in: timedelta = timedelta(days=2),
    priority: str = "routine",
    owner: str | None = None,
    type_: str = "post-discharge-contact",
    part2: bool = False,
    patient_id: uuid.UUID | None = None,
) -> Task:
    async with runtime.sessions() as session, session.begin():
        if patient_id is None:
            patient = Patient(family_name="Roe", given_name="Rita")
            session.add(patient)
            await session.flush()
            patient_id = patient.id
        encounter_id = None
        if part2:
            encounter = Encounter(patient_id=patient_id, facility="F", status="finished", part2=True)
            session.add(encounter)
            await session.flush()
            encounter_id = encounter.id
        task = Task(
            dedupe_key=str(uuid.uuid4()),
            type=type_,
            status=status,
            priority=priority,
            role=role,
            team=team,
            owner=owner,
            patient_id=patient_id,
            encounter_id=encounter_id,
            part2=part2,  # the label the create paths copy from a Part 2 encounter
            due_at=datetime.now(UTC) + due_in,
            due_basis={"anchor": "test"},
            rule_id="test-rule",
            rule_version="1",
            triggering_event_ids=[],
        )
        session.add(task)
    return task


async def page(client: httpx.AsyncClient, token: str, path: str = "/tasks", **params: object) -> dict:
    resp = await client.get(path, params=params, headers=bearer(token))
    assert resp.status_code == 200, resp.text
    return resp.json()


async def test_filters_sorts_and_pages_within_scope(
    runtime: Runtime, client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    late = await seed(runtime, due_in=timedelta(hours=-5), priority="urgent")
    soon = await seed(runtime, due_in=timedelta(hours=3))
    later = [await seed(runtime, due_in=timedelta(days=d)) for d in (2, 3, 4)]
    pool = await seed(runtime, team=None, due_in=timedelta(days=5), priority="stat")
    other_team = await seed(runtime, team="T2", due_in=timedelta(hours=1))
    other_role = await seed(runtime, role="BHCF", due_in=timedelta(hours=1))
    done = await seed(runtime, status="completed", due_in=timedelta(days=1))
    hidden_part2 = await seed(runtime, part2=True, due_in=timedelta(hours=2))
    mine = await seed(runtime, owner="pmc-1", due_in=timedelta(days=6))
    pmc = token_for("PMC", sub="pmc-1", teams=("T1",))

    first = await page(client, pmc, limit=3)
    expected = [late, soon, *later, pool, mine]
    assert [t["id"] for t in first["items"]] == [str(t.id) for t in expected[:3]]
    assert first["total"] == 7 and first["total_exact"] and first["count"] == 3
    assert first["items"][0]["timeliness"] == "overdue" and first["items"][1]["timeliness"] == "due-soon"
    ids = [t["id"] for t in first["items"]]
    cursor = first["next_cursor"]
    while cursor:
        nxt = await page(client, pmc, limit=3, cursor=cursor)
        ids += [t["id"] for t in nxt["items"]]
        cursor = nxt["next_cursor"]
    assert ids == [str(t.id) for t in expected]
    hidden = {other_team.id, other_role.id, done.id, hidden_part2.id}
    assert not hidden & {uuid.UUID(i) for i in ids}

    assert [t["id"] for t in (await page(client, pmc, overdue="true"))["items"]] == [str(late.id)]
    assert [t["id"] for t in (await page(client, pmc, due_soon="true"))["items"]] == [str(soon.id)]
    assert [t["id"] for t in (await page(client, pmc, owner="me"))["items"]] == [str(mine.id)]
    assert [t["id"] for t in (await page(client, pmc, team="none"))["items"]] == [str(pool.id)]
    assert (await page(client, pmc, owner="none"))["total"] == 6
    assert [t["id"] for t in (await page(client, pmc, status="completed"))["items"]] == [str(done.id)]
    window = await page(
        client,
        pmc,
        due_after=(datetime.now(UTC) + timedelta(days=1)).isoformat(),
        due_before=(datetime.now(UTC) + timedelta(days=3, hours=12)).isoformat(),
    )
    assert [t["id"] for t in window["items"]] == [str(t.id) for t in later[:2]]
    by_priority = await page(client, pmc, sort="priority", order="desc", limit=2)
    assert [t["id"] for t in by_priority["items"]] == [str(pool.id), str(late.id)]
    rest = await page(client, pmc, sort="priority", order="desc", limit=10, cursor=by_priority["next_cursor"])
    assert len(rest["items"]) == 5 and str(pool.id) not in {t["id"] for t in rest["items"]}
    newest = await page(client, pmc, sort="created", order="desc", limit=1)
    assert newest["items"][0]["id"] == str(mine.id)
    assert (await page(client, pmc, patient=str(soon.patient_id)))["items"][0]["id"] == str(soon.id)

    # A cursor for another order, a forged cursor, a naive date: 422 naming the field.
    bad = await client.get("/tasks", params={"cursor": first["next_cursor"], "sort": "created"}, headers=bearer(pmc))
    assert bad.status_code == 422 and bad.json()["field"] == "cursor"
    forged = await client.get("/tasks", params={"cursor": "bm9wZQ"}, headers=bearer(pmc))
    assert forged.status_code == 422 and forged.json()["field"] == "cursor"
    naive = await client.get("/tasks", params={"due_before": "2026-11-30T10:00:00"}, headers=bearer(pmc))
    assert naive.status_code == 422 and naive.json()["field"] == "due_before"
    many = await client.get("/tasks", params={"type": ",".join(f"t{i}" for i in range(21))}, headers=bearer(pmc))
    assert many.status_code == 422 and many.json()["field"] == "type"  # each count of values is a shape

    # The role queue is the same list; another role's queue is refused; a supervisor sees all roles.
    queue = await page(client, pmc, "/worklists/PMC", limit=50)
    assert [t["id"] for t in queue["items"]] == [str(t.id) for t in expected]
    assert (await client.get("/worklists/BHCF", headers=bearer(pmc))).status_code == 403
    supervisor = token_for("SUPERVISOR", "PART2", sub="sup", teams=("T1", "T2"))
    assert (await page(client, supervisor, "/worklists/BHCF"))["items"][0]["id"] == str(other_role.id)
    everything = await page(client, supervisor, limit=0)
    # 9 of 10: the Part 2 task also needs the patient's recorded consent, which this one lacks
    assert everything["total"] == 9 and everything["items"] == []


async def test_total_is_capped_on_a_long_queue(
    runtime: Runtime, client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    app = client._transport.app  # type: ignore[attr-defined]
    app.state.settings = app.state.settings.model_copy(update={"worklist_count_cap": 3})
    for _ in range(5):
        await seed(runtime)
    result = await page(client, token_for("PMC", teams=("T1",)), limit=2)
    assert (result["total"], result["total_exact"], result["count"]) == (3, False, 2)


async def test_summary_counts_open_due_today_overdue_and_unassigned_per_queue(
    runtime: Runtime, client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    await seed(runtime, due_in=timedelta(minutes=-10))
    await seed(runtime, due_in=timedelta(days=3), owner="pmc-1")
    await seed(runtime, team=None, due_in=timedelta(days=400))
    await seed(runtime, team="T2")
    await seed(runtime, role="RN", due_in=timedelta(days=-3))
    await seed(runtime, status="completed", due_in=timedelta(minutes=-10))
    summary = await page(client, token_for("SUPERVISOR", teams=("T1",)), "/worklists/summary")
    queues = {(q["role"], q["team"]): (q["open"], q["due_today"], q["overdue"]) for q in summary["queues"]}
    # Due 10 minutes ago is "due today" unless the facility's day began in the last 10 minutes.
    assert queues[("PMC", "T1")][0::2] == (2, 1) and queues[("PMC", "T1")][1] in (0, 1)
    assert queues[("PMC", None)] == (1, 0, 0) and queues[("RN", "T1")] == (1, 0, 1)
    assert ("PMC", "T2") not in queues
    unassigned = {(q["role"], q["team"]): q["unassigned"] for q in summary["queues"]}
    assert unassigned == {("PMC", "T1"): 1, ("PMC", None): 1, ("RN", "T1"): 1}  # the claimed one is not
    pmc_view = await page(client, token_for("PMC", teams=("T1",)), "/worklists/summary")
    assert {q["role"] for q in pmc_view["queues"]} == {"PMC"}


async def test_actions_version_ownership_history_and_audit(
    runtime: Runtime, client: httpx.AsyncClient, token_for: Callable[..., str], db: AsyncEngine
) -> None:
    task = await seed(runtime)
    url = f"/tasks/{task.id}"
    ana = bearer(token_for("PMC", sub="ana", teams=("T1",)))
    bo = bearer(token_for("PMC", sub="bo", teams=("T1",)))
    supervisor = bearer(token_for("SUPERVISOR", sub="sup", teams=("T1",)))

    read = await client.get(url, headers=ana)
    assert read.status_code == 200 and read.headers["etag"] == 'W/"1"'
    claimed = await client.post(f"{url}/claim", headers={**ana, "If-Match": 'W/"1"'})
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["owner"] == "ana" and claimed.headers["etag"] == 'W/"2"'
    stale = await client.post(f"{url}/start", headers={**ana, "If-Match": 'W/"1"'})
    assert stale.status_code == 412 and stale.json()["field"] == "If-Match"
    taken = await client.post(f"{url}/claim", headers=bo)
    assert taken.status_code == 409 and taken.json()["field"] == "owner"
    assert (await client.post(f"{url}/complete", json={"outcome": "x"}, headers=bo)).status_code == 409
    assert (await client.post(f"{url}/assign", json={"owner": "bo"}, headers=ana)).status_code == 403
    again = await client.post(f"{url}/claim", headers=ana)
    assert again.status_code == 200 and again.headers["etag"] == 'W/"2"', "claiming your own task changes nothing"

    released = await client.post(f"{url}/release", headers={**ana, "If-Match": 'W/"2"'})
    assert released.json()["owner"] is None and released.headers["etag"] == 'W/"3"'
    assigned = await client.post(f"{url}/assign", json={"owner": "bo"}, headers=supervisor)
    assert assigned.status_code == 200 and assigned.json()["owner"] == "bo"
    started = await client.post(f"{url}/start", headers=bo)
    assert started.json()["status"] == "in-progress"
    assert (await client.post(f"{url}/start", headers=bo)).status_code == 409
    stale_attempt = await client.post(
        f"{url}/attempts", json={"outcome": "reached"}, headers={**bo, "If-Match": 'W/"4"'}
    )
    assert stale_attempt.status_code == 412
    not_hers = await client.post(f"{url}/attempts", json={"outcome": "no-answer"}, headers=ana)
    assert not_hers.status_code == 409 and not_hers.json()["field"] == "owner", "bo's call log is bo's"
    attempt = await client.post(f"{url}/attempts", json={"outcome": "reached"}, headers={**bo, "If-Match": 'W/"5"'})
    assert attempt.status_code == 200 and attempt.headers["etag"] == 'W/"6"'
    done = await client.post(
        f"{url}/complete",
        json={"outcome": "follow-up booked", "note": "clinic Tue"},
        headers={**bo, "If-Match": 'W/"6"'},
    )
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "completed" and done.json()["business_status"] == "follow-up booked"
    assert (await client.post(f"{url}/cancel", json={"reason": "dup"}, headers=supervisor)).status_code == 409
    outsider = bearer(token_for("PMC", sub="cy", teams=("T9",)))
    assert (await client.post(f"{url}/claim", headers=outsider)).status_code == 404
    assert (await client.get(url, headers=outsider)).status_code == 404

    async with db.connect() as conn:
        history = (
            await conn.execute(select(TaskHistory).where(TaskHistory.task_id == task.id).order_by(TaskHistory.id))
        ).all()
        audits = (await conn.execute(select(AuditEvent).where(AuditEvent.action == "U"))).all()
    assert [(h.action, h.actor, h.to_status) for h in history] == [
        ("claim", "user:ana", "ready"),
        ("release", "user:ana", "ready"),
        ("assign", "user:sup", "ready"),
        ("start", "user:bo", "in-progress"),
        ("attempt", "user:bo", "in-progress"),
        ("complete", "user:bo", "completed"),
    ]
    assert history[-1].detail == {"outcome": "follow-up booked", "note": "clinic Tue"}
    assert history[2].detail == {"owner": [None, "bo"]}
    refused = [a for a in audits if a.outcome == "4"]
    # Every attempt names the task's patient, the outsider's refused claim included (an auditor asks "who
    # tried to touch this patient's work"); the outsider's answer is the same 404 as for no task.
    assert len(refused) == 7 and all(a.patient_ids == [str(task.patient_id)] for a in audits)
    assert any(a.actor == "cy" and a.outcome == "4" for a in audits)


async def test_cancel_keeps_the_reason(
    runtime: Runtime, client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    task = await seed(runtime)
    pmc = bearer(token_for("PMC", sub="ana", teams=("T1",)))
    missing = await client.post(f"/tasks/{task.id}/cancel", json={}, headers=pmc)
    assert missing.status_code == 422 and missing.json()["field"] == "reason"
    cancelled = await client.post(f"/tasks/{task.id}/cancel", json={"reason": "moved out of area"}, headers=pmc)
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["business_status"] == "moved out of area"


async def test_concurrent_claims_never_both_succeed(
    runtime: Runtime, client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    tasks = [await seed(runtime) for _ in range(5)]
    users = [bearer(token_for("PMC", sub=f"user-{i}", teams=("T1",))) for i in range(4)]
    for task in tasks:
        responses = await asyncio.gather(*(client.post(f"/tasks/{task.id}/claim", headers=u) for u in users))
        codes = sorted(r.status_code for r in responses)
        assert codes == [200, 409, 409, 409], [r.text for r in responses]
        winner = next(r for r in responses if r.status_code == 200).json()["owner"]
        assert (await client.get(f"/tasks/{task.id}", headers=users[0])).json()["owner"] == winner


async def test_a_facilitator_works_a_queue_from_adt_to_completion(
    runtime: Runtime, client: httpx.AsyncClient, token_for: Callable[..., str], db: AsyncEngine
) -> None:
    key = patient_partition_key("urn:hl7v2:aa:GOODHEALTH", "MRN12345")
    await produce(runtime.settings, adt().encode(), key=key)
    pmc = token_for("PMC", sub="pmc-1")

    async def queue() -> list[dict]:
        return (await page(client, pmc, "/worklists/PMC"))["items"]

    [task] = await eventually(queue)
    url = f"/tasks/{task['id']}"
    claimed = await client.post(f"{url}/claim", headers={**bearer(pmc), "If-Match": f'W/"{task["version"]}"'})
    assert claimed.status_code == 200
    for outcome in ("no-answer", "reached"):
        assert (await client.post(f"{url}/attempts", json={"outcome": outcome}, headers=bearer(pmc))).status_code == 200
    etag = (await client.get(url, headers=bearer(pmc))).headers["etag"]
    done = await client.post(
        f"{url}/complete", json={"outcome": "visit scheduled"}, headers={**bearer(pmc), "If-Match": etag}
    )
    assert done.status_code == 200 and done.json()["status"] == "completed"
    assert await queue() == []
    async with db.connect() as conn:
        stored = (await conn.execute(select(Task))).one()
    assert (stored.status, stored.owner, stored.business_status) == ("completed", "pmc-1", "visit scheduled")
