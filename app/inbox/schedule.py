"""Which sender a file belongs to, and which expected daily files are late. Pure: the caller gives
the clock and what has arrived."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time
from fnmatch import fnmatchcase
from zoneinfo import ZoneInfo

from app.settings import InboxSchedule

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def entry_for(filename: str, schedule: Sequence[InboxSchedule]) -> InboxSchedule | None:
    return next((e for e in schedule if fnmatchcase(filename, e.pattern)), None)


@dataclass(frozen=True, slots=True)
class Expectation:
    entry: InboxSchedule
    day_start: datetime  # local midnight of the day the file is due, as an aware instant
    cutoff: datetime


def overdue(schedule: Sequence[InboxSchedule], now: datetime, zone: ZoneInfo) -> list[Expectation]:
    """Entries whose file is due today and whose cutoff has passed (arrival is checked by the caller)."""
    local = now.astimezone(zone)
    start = datetime.combine(local.date(), time(0), tzinfo=zone)
    result = []
    for entry in schedule:
        if WEEKDAYS[local.weekday()] not in entry.days:
            continue
        hour, minute = (int(p) for p in entry.cutoff.split(":"))
        cutoff = datetime.combine(local.date(), time(hour, minute), tzinfo=zone)
        if local >= cutoff:
            result.append(Expectation(entry, start, cutoff))
    return result
