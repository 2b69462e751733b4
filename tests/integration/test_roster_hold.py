"""Roster safety on a real inbox folder: a file that would terminate most of a sender's members is held
(nothing applied, no task cancelled) until data staff confirm or reject it over the API; the inbox
never follows a symbolic link or reads a file outside its folder."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import AuditEvent, RosterImport, RosterMember, Task
from app.inbox.watcher import InboxWatcher
from app.runtime import Runtime
from tests.conftest import bearer, eventually
from tests.roster_builder import csv_text, make_importer, member

MONDAY = datetime(2026, 11, 2, 17, 0, tzinfo=UTC)  # no schedule: nothing else raises alerts


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


async def members(db: AsyncEngine, status: str) -> int:
    async with db.connect() as conn:
        return len((await conn.execute(select(RosterMember.id).where(RosterMember.status == status))).all())


async def open_tasks(db: AsyncEngine, task_type: str) -> int:
    async with db.connect() as conn:
        rows = await conn.execute(select(Task.id).where(Task.type == task_type, Task.status != "cancelled"))
        return len(rows.all())


@pytest.mark.api_only
async def test_a_one_row_snapshot_is_held_then_confirmed_or_rejected(
    db: AsyncEngine, inbox: Path, client: httpx.AsyncClient, token_for: Callable[..., str], runtime: Runtime
) -> None:
    w = InboxWatcher(inbox, make_importer(db, inbox.parent, inbox_settle_s=0))
    (inbox / "day1.csv").write_text(csv_text([member(i) for i in range(1, 21)]))
    [first] = await w.poll_once(MONDAY)
    assert first.status == "completed" and first.added == 20

    (inbox / "day2.csv").write_text(csv_text([member(1)]))  # a one-row file sent as a full snapshot
    [held] = await w.poll_once(MONDAY)
    assert held.status == "held" and "would terminate 19 of 20 active members" in (held.reason or "")
    assert await members(db, "active") == 20 and await open_tasks(db, "new-member-outreach") == 20
    [parked] = [p for p in (inbox / "held").iterdir() if not p.name.endswith(".reason.txt")]
    assert parked.name == f"{held.import_id}~day2.csv"
    assert "would terminate" in (inbox / "held" / f"{parked.name}.reason.txt").read_text()
    assert await open_tasks(db, "roster-file-held") == 1
    assert await w.poll_once(MONDAY) == [] and parked.exists()  # stays held, poll after poll

    data, facilitator = token_for("DATA", sub="data-staff"), token_for("PCF")
    assert (await client.get("/rosters/imports", headers=bearer(facilitator))).status_code == 403
    listed = (await client.get("/rosters/imports?status=held", headers=bearer(data))).json()
    assert [j["id"] for j in listed["items"]] == [str(held.import_id)]
    forbidden = await client.post(f"/rosters/imports/{held.import_id}/confirm", headers=bearer(facilitator))
    assert forbidden.status_code == 403
    ok = await client.post(f"/rosters/imports/{held.import_id}/confirm", headers=bearer(data))
    assert ok.status_code == 200, ok.text
    again = await client.post(f"/rosters/imports/{held.import_id}/confirm", headers=bearer(data))
    assert again.status_code == 409

    [applied] = await w.poll_once(MONDAY)
    assert applied.status == "completed" and applied.terminated == 19
    assert (inbox / "processed" / "day2.csv").exists() and not list((inbox / "held").iterdir())
    assert await members(db, "active") == 1 and await open_tasks(db, "new-member-outreach") == 1

    # Another mass termination, rejected this time: nothing applied, filed under rejected/.
    (inbox / "day3.csv").write_text(csv_text([member(i) for i in range(30, 50)]))  # ends member 1, adds 20
    [second] = await w.poll_once(MONDAY)
    assert second.status == "completed"  # 1 termination: under the minimum, applied
    (inbox / "day4.csv").write_text(csv_text([member(30)]))
    [held4] = await w.poll_once(MONDAY)
    assert held4.status == "held"
    rejected = await client.post(f"/rosters/imports/{held4.import_id}/reject", headers=bearer(data))
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    [filed] = await w.poll_once(MONDAY)
    assert filed.status == "rejected" and (inbox / "rejected" / "day4.csv").exists()
    assert "rejected by data staff" in (inbox / "rejected" / "day4.csv.reason.txt").read_text()
    assert await members(db, "active") == 20
    async with db.connect() as conn:
        audits = (await conn.execute(select(AuditEvent.request).where(AuditEvent.actor == "data-staff"))).all()
        job = (await conn.execute(select(RosterImport.status).where(RosterImport.id == held4.import_id))).one()
    assert job.status == "rejected"
    assert {f"POST /rosters/imports/{held.import_id}/confirm", f"POST /rosters/imports/{held4.import_id}/reject"} <= {
        a.request for a in audits
    }


async def test_the_threshold_is_configurable(db: AsyncEngine, inbox: Path) -> None:
    w = InboxWatcher(
        inbox, make_importer(db, inbox.parent, inbox_settle_s=0, roster_hold_termination_ratio=1.0)
    )  # 1 = never hold
    (inbox / "a.csv").write_text(csv_text([member(i) for i in range(1, 21)]))
    (inbox / "b.csv").write_text(csv_text([member(1)]))
    outcomes = await w.poll_once(MONDAY)
    assert [o.status for o in outcomes] == ["completed", "completed"] and outcomes[1].terminated == 19


async def test_links_and_special_files_are_refused_not_read(db: AsyncEngine, inbox: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.csv"
    outside.write_text(csv_text([member(1)]))
    (inbox / "passwd.csv").symlink_to("/etc/passwd")
    (inbox / "outside.csv").symlink_to(outside)
    os.link(outside, inbox / "hardlink.csv")
    os.mkfifo(inbox / "pipe.csv")
    w = InboxWatcher(inbox, make_importer(db, inbox.parent, inbox_settle_s=0))
    outcomes = await w.poll_once(MONDAY)
    assert sorted(o.status for o in outcomes) == ["rejected"] * 4
    reasons = {p.name: p.read_text() for p in (inbox / "rejected").glob("*.reason.txt")}
    assert "symbolic link" in reasons["passwd.csv.reason.txt"] and "symbolic link" in reasons["outside.csv.reason.txt"]
    assert "hard link" in reasons["hardlink.csv.reason.txt"] and "not a regular file" in reasons["pipe.csv.reason.txt"]
    assert (inbox / "rejected" / "passwd.csv").is_symlink()  # the link itself moved, its target untouched
    async with db.connect() as conn:
        assert (await conn.execute(select(RosterImport.id))).all() == []  # nothing was read or imported
        alerts = (await conn.execute(select(Task.type))).scalars().all()
    assert alerts == ["roster-file-rejected"] * 4
    assert await members(db, "active") == 0


@pytest.mark.api_only
async def test_a_held_upload_is_kept_and_applied_on_confirm(
    client: httpx.AsyncClient, token_for: Callable[..., str], runtime: Runtime, db: AsyncEngine
) -> None:
    from tests.integration.test_roster_api import finished, upload

    data = token_for("DATA")
    first = await upload(client, data, csv_text([member(i) for i in range(1, 21)]), "day1.csv")
    assert (await finished(client, data, first.json()["id"]))["status"] == "completed"
    second = await upload(client, data, csv_text([member(1)]), "day2.csv", as_of="2026-11-03")
    job = await finished(client, data, second.json()["id"])
    assert job["status"] == "held" and job["terminated"] == 19 and "would terminate" in job["reason"]
    kept = runtime.settings.var_dir / "roster-uploads" / "held" / f"{job['id']}.upload"
    assert kept.exists() and await members(db, "active") == 20
    confirmed = await client.post(f"/rosters/imports/{job['id']}/confirm", headers=bearer(data))
    assert confirmed.status_code == 200, confirmed.text

    async def applied() -> dict | None:
        body = (await client.get(f"/rosters/imports/{job['id']}", headers=bearer(data))).json()
        return body if body["status"] not in ("queued", "confirmed") else None

    done = await eventually(applied)
    assert done is not None and (done["status"], done["terminated"]) == ("completed", 19)
    assert not kept.exists() and await members(db, "active") == 1
