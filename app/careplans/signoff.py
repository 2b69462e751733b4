"""When a care plan is due for PCP sign-off (seed 004: CPs track "unsigned care plans that are due or
overdue" and chase PCP sign-off; DESIGN: the dashboard lists care plans awaiting PCP sign-off).

An active plan never signed is due `due_days` after it became active; a signed plan is due again
`renewal_days` after its last sign-off (annual review). Both numbers are settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

SignOffState = Literal["overdue", "due", "not-due"]


@dataclass(frozen=True, slots=True)
class SignOffPolicy:
    due_days: int
    renewal_days: int
    due_soon_days: int

    def due_at(self, activated_at: datetime, signed_off_at: datetime | None) -> datetime:
        if signed_off_at is None:
            return activated_at + timedelta(days=self.due_days)
        return signed_off_at + timedelta(days=self.renewal_days)

    def state(self, activated_at: datetime, signed_off_at: datetime | None, now: datetime) -> SignOffState:
        due = self.due_at(activated_at, signed_off_at)
        if due <= now:
            return "overdue"
        if due <= now + timedelta(days=self.due_soon_days):
            return "due"
        return "not-due"

    def cutoffs(self, now: datetime) -> tuple[datetime, datetime]:
        """(activated before, signed before): plans past these are due or overdue (for the SQL filter)."""
        horizon = now + timedelta(days=self.due_soon_days)
        return horizon - timedelta(days=self.due_days), horizon - timedelta(days=self.renewal_days)
