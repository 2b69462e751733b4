"""Inbox watcher: each file processed exactly once, across restarts and concurrent watchers; the
expected-file schedule raises one alert task per missing daily file."""

from __future__ import annotations

import fcntl
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import RosterImport, RosterMember, Task
from app.inbox.schedule import WEEKDAYS
from app.inbox.watcher import InboxWatcher
from app.metrics import sample
from app.settings import InboxSchedule
from app.state import rosters as store
from tests.roster_builder import csv_text, make_importer, member

SCHEDULE = [InboxSchedule(sender="ACME", pattern="acme_*.csv", cutoff="09:00", days=["tue"])]
# The file tests poll on a day SCHEDULE expects nothing: on a real Tuesday after 09:00 the schedule would
# add its missing-file alert to what they count.
MONDAY = datetime(2026, 11, 2, 17, 0, tzinfo=UTC)


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


def watcher(db: AsyncEngine, inbox: Path, **settings: object) -> InboxWatcher:
    settings = {"inbox_settle_s": 0, "inbox_schedule": SCHEDULE, **settings}
    importer = make_importer(db, inbox.parent, **settings)
    return InboxWatcher(inbox, importer)


async def count(db: AsyncEngine, model: type) -> int:
    async with db.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(model)) or 0)


async def test_files_are_processed_once_and_filed(db: AsyncEngine, inbox: Path) -> None:
    w = watcher(db, inbox)
    (inbox / "acme_20261103.csv").write_text(csv_text([member(1), member(2)]))
    (inbox / ".acme_partial.csv").write_text("still uploading")
    [outcome] = await w.poll_once(MONDAY)
    assert outcome.status == "completed" and outcome.added == 2
    assert (inbox / "processed" / "acme_20261103.csv").exists() and (inbox / ".acme_partial.csv").exists()
    # The same bytes under another name: no second effect, filed as processed.
    (inbox / "acme_20261103_resend.csv").write_text(csv_text([member(1), member(2)]))
    [again] = await w.poll_once(MONDAY)
    assert again.duplicate and await count(db, RosterImport) == 1 and await count(db, Task) == 2
    assert (inbox / "processed" / "acme_20261103_resend.csv").exists()
    assert not list((inbox / "processing").iterdir())


async def test_unknown_sender_and_bad_file_are_rejected_with_a_reason(db: AsyncEngine, inbox: Path) -> None:
    w = watcher(db, inbox)
    (inbox / "other.csv").write_text(csv_text([member(1)]))
    (inbox / "acme_empty.csv").write_text("")
    outcomes = await w.poll_once(MONDAY)
    assert sorted(o.status for o in outcomes) == ["rejected", "rejected"]
    assert "matches this file name" in (inbox / "rejected" / "other.csv.reason.txt").read_text()
    assert "empty" in (inbox / "rejected" / "acme_empty.csv.reason.txt").read_text()
    async with db.connect() as conn:
        alerts = (await conn.execute(select(Task.type, Task.role, Task.patient_id))).all()
    assert sorted(alerts) == [("roster-file-rejected", "DATA", None)] * 2


async def test_restart_mid_file_finishes_it_once(db: AsyncEngine, inbox: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (inbox / "acme_1.csv").write_text(csv_text([member(i) for i in range(1, 6)]))
    first = watcher(db, inbox)
    real_reconcile = store.reconcile

    async def crash(*args: object, **kwargs: object) -> None:
        await real_reconcile(*args, **kwargs)  # type: ignore[arg-type]
        raise ConnectionResetError("watcher killed mid-import")

    monkeypatch.setattr(store, "reconcile", crash)
    with pytest.raises(ConnectionResetError):
        await first.poll_once(MONDAY)
    [claimed] = list((inbox / "processing").iterdir())  # still claimed, nothing applied
    assert await count(db, RosterMember) == 0 and await count(db, Task) == 0
    monkeypatch.setattr(store, "reconcile", real_reconcile)

    restarted = watcher(db, inbox)
    [outcome] = await restarted.poll_once(MONDAY)
    assert outcome.status == "completed" and outcome.added == 5 and not claimed.exists()
    assert await count(db, RosterMember) == 5 and await count(db, Task) == 5
    assert await restarted.poll_once(MONDAY) == []


async def test_a_file_another_watcher_holds_is_left_alone(db: AsyncEngine, inbox: Path) -> None:
    w = watcher(db, inbox)
    held = inbox / "processing" / "abc~acme_2.csv"
    held.write_text(csv_text([member(1)]))
    with held.open("rb") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        assert await w.poll_once(MONDAY) == []
    [outcome] = await w.poll_once(MONDAY)  # its holder is gone: taken over
    assert outcome.status == "completed" and (inbox / "processed" / "acme_2.csv").exists()


async def test_missing_daily_file_raises_one_alert_and_a_metric(db: AsyncEngine, inbox: Path) -> None:
    w = watcher(db, inbox)
    before_cutoff = datetime(2026, 11, 3, 13, 0, tzinfo=UTC)  # Tuesday 08:00 in New York
    after_cutoff = datetime(2026, 11, 3, 15, 0, tzinfo=UTC)
    await w.check_schedule(before_cutoff)
    assert await count(db, Task) == 0
    missed = sample("carecoord_inbox_missing_files_total", sender="ACME") or 0
    await w.check_schedule(after_cutoff)
    await w.check_schedule(after_cutoff)
    async with db.connect() as conn:
        [alert] = (await conn.execute(select(Task))).all()
    assert (alert.type, alert.role, alert.priority, alert.patient_id) == ("roster-file-missing", "DATA", "urgent", None)
    assert alert.due_basis["sender"] == "ACME"
    assert sample("carecoord_inbox_missing_files_total", sender="ACME") == missed + 1
    assert sample("carecoord_inbox_file_missing", sender="ACME") == 1
    await w.check_schedule(datetime(2026, 11, 4, 15, 0, tzinfo=UTC))  # Wednesday: not expected
    assert await count(db, Task) == 1


async def test_a_file_that_arrived_today_satisfies_the_schedule(db: AsyncEngine, inbox: Path) -> None:
    every_day = [InboxSchedule(sender="ACME", pattern="acme_*.csv", cutoff="00:00", days=list(WEEKDAYS))]
    w = watcher(db, inbox, inbox_schedule=every_day)
    (inbox / "acme_today.csv").write_text(csv_text([member(1)]))
    await w.poll_once()
    async with db.connect() as conn:
        received = await conn.scalar(select(RosterImport.received_at))
    assert received is not None
    local = received.astimezone(ZoneInfo("America/New_York"))
    await w.check_schedule(local.replace(hour=23, minute=59))  # same local day, past its cutoff
    assert await count(db, Task) == 1  # only the new member's outreach, no alert
