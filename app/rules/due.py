"""Due-time policies. Calendar offsets are applied on the facility's wall clock, so "7 days after a
10:00 discharge" is 10:00 a week later even across a DST change, as a facilitator would read it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from app.rules.calendar import BusinessCalendar


@dataclass(frozen=True, slots=True)
class DueTime:
    due_at: datetime
    basis: dict[str, Any]


def calendar_due(anchor: datetime, anchor_name: str, *, days: int = 0, hours: int = 0, zone: ZoneInfo) -> DueTime:
    if anchor.tzinfo is None:
        raise ValueError("anchor must be an aware instant")
    local = anchor.astimezone(zone)
    # Days move the wall clock (DST-safe); hours are elapsed time. Without days the anchor instant
    # stands (a wall-clock round trip would lose which 01:30 of a fall-back night it was).
    start = (local.replace(tzinfo=None) + timedelta(days=days)).replace(tzinfo=zone) if days else local
    due = start.astimezone(UTC) + timedelta(hours=hours)
    return DueTime(
        due_at=due,
        basis={
            "policy": "calendar",
            "anchor": anchor_name,
            "anchor_at": anchor.astimezone(UTC).isoformat(),
            "days": days,
            "hours": hours,
            "time_zone": zone.key,
        },
    )


def business_due(
    anchor: datetime,
    anchor_name: str,
    *,
    days: int,
    calendar: BusinessCalendar,
    close_of_business: time,
    zone: ZoneInfo,
) -> DueTime:
    """Close of business on the `days`-th business day after the anchor's local date: what "within
    two business days" means to the office making the call (seed 004; CMS TCM)."""
    if anchor.tzinfo is None:
        raise ValueError("anchor must be an aware instant")
    local = anchor.astimezone(zone)
    day, skipped = calendar.add_business_days(local.date(), days)
    due = datetime.combine(day, close_of_business, tzinfo=zone).astimezone(UTC)
    return DueTime(
        due_at=due,
        basis={
            "policy": "business-days",
            "anchor": anchor_name,
            "anchor_at": anchor.astimezone(UTC).isoformat(),
            "business_days": days,
            "close_of_business": close_of_business.isoformat(timespec="minutes"),
            "skipped": [f"{d.isoformat()} {calendar.holiday_name(d) or 'weekend'}" for d in skipped],
            "time_zone": zone.key,
        },
    )


def end_of_day_due(anchor: datetime, anchor_name: str, *, zone: ZoneInfo) -> DueTime:
    """The end of the anchor's local day ("same day")."""
    if anchor.tzinfo is None:
        raise ValueError("anchor must be an aware instant")
    local = anchor.astimezone(zone)
    due = datetime.combine(local.date(), time(23, 59), tzinfo=zone).astimezone(UTC)
    return DueTime(
        due_at=max(due, anchor.astimezone(UTC)),
        basis={
            "policy": "end-of-day",
            "anchor": anchor_name,
            "anchor_at": anchor.astimezone(UTC).isoformat(),
            "time_zone": zone.key,
        },
    )


def anchor_of(basis: dict[str, Any] | None) -> datetime | None:
    """The instant a stored due basis counted from (evidence and readmissions must come after it)."""
    raw = (basis or {}).get("anchor_at")
    return datetime.fromisoformat(raw) if isinstance(raw, str) else None
