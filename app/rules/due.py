"""Due-time policies. Calendar offsets are applied on the facility's wall clock, so "7 days after a
10:00 discharge" is 10:00 a week later even across a DST change, as a facilitator would read it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo


@dataclass(frozen=True, slots=True)
class DueTime:
    due_at: datetime
    basis: dict[str, Any]


def calendar_due(anchor: datetime, anchor_name: str, *, days: int = 0, hours: int = 0, zone: ZoneInfo) -> DueTime:
    if anchor.tzinfo is None:
        raise ValueError("anchor must be an aware instant")
    local = anchor.astimezone(zone)
    # Days move the wall clock (DST-safe); hours are elapsed time.
    wall = (local.replace(tzinfo=None) + timedelta(days=days)).replace(tzinfo=zone)
    due = wall.astimezone(UTC) + timedelta(hours=hours)
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
