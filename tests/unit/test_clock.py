"""The application clock: one injectable source of "now", and no other reader of the wall clock in app/."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from app import clock
from app.db.models import utcnow

APP = Path(__file__).resolve().parents[2] / "app"
# Readers of the OS clock allowed outside app/clock.py, each for the reason clock.py's docstring gives.
OS_CLOCK_READERS = {
    "api/auth.py",  # JWT iat/nbf/exp: security time, never a test clock
    "api/token_cache.py",  # verified-token cache lifetime: security time
    "ui/session.py",  # the session cookie's remaining token lifetime: security time
    "inbox/watcher.py",  # compared with file mtimes the OS stamps
    "consumers/consumer_metrics.py",  # compared with broker-stamped record timestamps
}
WALL_CLOCK = re.compile(r"datetime\.now\(|datetime\.utcnow\(|date\.today\(|\btime\.time\(\)")


def test_an_installed_clock_is_what_the_application_reads() -> None:
    at = datetime(2031, 3, 9, 6, 59, tzinfo=UTC)
    with clock.use(clock.FixedClock(at)) as fixed:
        assert clock.now() == at
        assert utcnow() == at  # the ORM defaults and the state layer read the same clock
        assert clock.today(ZoneInfo("America/New_York")) == at.astimezone(ZoneInfo("America/New_York")).date()
        fixed.advance(timedelta(minutes=2))
        assert clock.now() == at + timedelta(minutes=2)
    assert abs(clock.now() - datetime.now(UTC)) < timedelta(seconds=5)


def test_a_fixed_clock_refuses_a_naive_instant() -> None:
    with pytest.raises(ValueError, match="aware"):
        clock.FixedClock(datetime(2031, 1, 1))


def test_no_module_reads_the_wall_clock_but_the_clock() -> None:
    readers = {
        path.relative_to(APP).as_posix()
        for path in APP.rglob("*.py")
        if path.name != "clock.py" and WALL_CLOCK.search(path.read_text(encoding="utf-8"))
    }
    assert readers <= OS_CLOCK_READERS, f"read the time through app.clock: {sorted(readers - OS_CLOCK_READERS)}"
