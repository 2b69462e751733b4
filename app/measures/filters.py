"""What a dashboard asks for: a period of local dates, optionally one team and one role."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo


class FilterError(ValueError):
    """A filter that cannot be computed; `field` names the offending query parameter."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class MeasureFilter:
    """Period dates are inclusive and read on the facility clock: a stay discharged at 23:30 local on
    the period's last day belongs to the period, whatever its UTC date. `team` is a practice (the task's
    team, or the roster practice); `role` a facilitator role (task role)."""

    period_start: date
    period_end: date
    team: str | None = None
    role: str | None = None

    def check(self, max_days: int | None = None) -> None:
        if self.period_end < self.period_start:
            raise FilterError("period_end", "period_end is before period_start")
        if max_days is not None and (self.period_end - self.period_start).days + 1 > max_days:
            raise FilterError("period_end", f"the period may span at most {max_days} days")
        for name in ("team", "role"):
            value = getattr(self, name)
            if value is not None and (not value.strip() or "\x00" in value):
                raise FilterError(name, f"{name} may not be empty or contain NUL characters")


@dataclass(frozen=True, slots=True)
class Instants:
    """A period as the half-open instant range [start, end) that SQL compares timestamps against."""

    start: datetime
    end: datetime


def period_instants(flt: MeasureFilter, zone: ZoneInfo) -> Instants:
    """Local midnight of period_start to local midnight after period_end (DST days are 23 or 25 h)."""
    following = flt.period_end + timedelta(days=1)
    return Instants(datetime.combine(flt.period_start, time(), zone), datetime.combine(following, time(), zone))
