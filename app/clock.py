"""The application's clock: the one place application code reads the current time.

Everything that decides with "now" (due times and timeliness, measure windows, roster effective dates,
escalation, ACK and FHIR timestamps, audit times, ORM defaults through `app.db.models.utcnow`) calls
`now()` or `today()`. A test installs another clock with `use()`; `.ci/run` also moves the whole
machine's clock (libfaketime) a year ahead and onto a US DST change day, so a date that ages out or a
zone arithmetic slip shows up as a red test.

Invariants:
- `now()` is timezone-aware UTC; `today(zone)` is the calendar date in that zone at `now()`.
- Two kinds of time are read from the operating system on purpose, not from here: security checks (JWT
  `exp`/`nbf` in PyJWT, the verified-token cache), because a test clock must never extend a token's
  life; and comparisons with values the OS or the broker stamps (file mtimes, Kafka record timestamps).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    """The operating system's clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock standing at one instant until moved (tests)."""

    def __init__(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FixedClock needs an aware datetime")
        self.at = at.astimezone(UTC)

    def now(self) -> datetime:
        return self.at

    def advance(self, by: timedelta) -> None:
        self.at += by


_current: Clock = SystemClock()


def now() -> datetime:
    """The current instant, timezone-aware UTC."""
    return _current.now()


def today(zone: tzinfo) -> date:
    """The calendar date in `zone` at `now()`."""
    return now().astimezone(zone).date()


@contextmanager
def use(clock: Clock) -> Iterator[Clock]:
    """Install `clock` for the duration of the block (tests); the previous one is restored after."""
    global _current
    previous, _current = _current, clock
    try:
        yield clock
    finally:
        _current = previous
