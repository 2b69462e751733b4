"""Business days: weekends, public holidays (the `holidays` package) and the organisation's own closures.

"Two business days after a Friday-evening discharge" is Tuesday, and after a discharge on the eve of
Thanksgiving it skips the holiday, because that is when the office can actually make the call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cached_property

import holidays

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class BusinessCalendar:
    country: str | None = "US"
    subdivision: str | None = None
    weekend: frozenset[str] = frozenset({"sat", "sun"})
    closed: frozenset[date] = field(default_factory=frozenset)  # closures beyond public holidays
    open: frozenset[date] = field(default_factory=frozenset)  # public holidays the office works

    @cached_property
    def _public(self) -> holidays.HolidayBase | None:
        if not self.country:
            return None
        return holidays.country_holidays(self.country, subdiv=self.subdivision)

    def holiday_name(self, day: date) -> str | None:
        if day in self.open:
            return None
        if day in self.closed:
            return "organisation closure"
        if self._public is not None and day in self._public:
            return str(self._public.get(day))
        return None

    def is_business_day(self, day: date) -> bool:
        return WEEKDAYS[day.weekday()] not in self.weekend and self.holiday_name(day) is None

    def add_business_days(self, start: date, days: int) -> tuple[date, list[date]]:
        """The `days`-th business day after `start` (start itself never counts), and the non-business
        days passed over, which the task's due basis records."""
        if days < 1:
            raise ValueError("days must be at least 1")
        skipped: list[date] = []
        day, counted = start, 0
        for _ in range(days * 7 + 366):  # bounded: a calendar closed all year is a configuration error
            day += timedelta(days=1)
            if self.is_business_day(day):
                counted += 1
                if counted == days:
                    return day, skipped
            else:
                skipped.append(day)
        raise ValueError("no business day within a year: check the calendar's weekend and closures")
