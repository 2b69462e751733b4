"""The BH referral loop: its milestones as FHIR Task.businessStatus, and which moves are allowed.

Pure. The milestones are seed 003's referral tracking (the time a referral is made, the first visit,
the visit summary received by the practice), on the HL7 SDOH Clinical Care referral Task pattern:
Task.status carries the FHIR state (ready -> in-progress -> completed), Task.businessStatus the
milestone. A facilitator records `sent` and `scheduled`; a BH visit after the referral moves it to
`first-visit`; a consult summary closes it (`summary-received`, Task.status completed). A person may
record a visit or a summary the feeds never brought (a faxed note).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from app.rules.due import calendar_due
from app.tasks.lifecycle import ACTIVE, TransitionError, check_transition


class BusinessStatus(StrEnum):
    REQUESTED = "requested"  # raised by the positive screen; the referral is not sent yet
    SENT = "sent"  # referral (and records) sent to the BH provider: the loop's clock starts
    SCHEDULED = "scheduled"  # the first appointment is booked
    FIRST_VISIT = "first-visit"  # the patient was seen by the BH provider
    SUMMARY_RECEIVED = "summary-received"  # the visit summary reached the practice: the loop is closed


LOOP = tuple(BusinessStatus)
CLOSED = BusinessStatus.SUMMARY_RECEIVED
# Milestones a person may record only once the referral has gone out.
_AFTER_SENT = frozenset({BusinessStatus.SCHEDULED, BusinessStatus.FIRST_VISIT, BusinessStatus.SUMMARY_RECEIVED})
WORKING = "in-progress"  # Task.status while the loop is open past `requested`


@dataclass(frozen=True, slots=True)
class LoopMove:
    business_status: BusinessStatus
    status: str  # the Task.status that goes with it


def loop_move(status: str, current: str | None, target: BusinessStatus, *, by_evidence: bool = False) -> LoopMove:
    """Where `target` takes a referral task now `status` / `current`; TransitionError when it may not
    go there. Forward only; a person records `sent` before the later milestones, while evidence (a
    visit, a summary) counts whenever it comes, since it proves the referral happened."""
    if current is None:
        raise TransitionError("the task is not a referral loop (it has no business status)")
    if status not in ACTIVE:
        raise TransitionError(f"a {status} referral takes no more milestones")
    before, after = LOOP.index(BusinessStatus(current)), LOOP.index(target)
    if after <= before:
        raise TransitionError(f"the referral is already {current}; it cannot become {target.value}")
    if not by_evidence and target in _AFTER_SENT and current == BusinessStatus.REQUESTED:
        raise TransitionError(f"record the referral as sent before {target.value}")
    new_status = "completed" if target is CLOSED else (status if status == WORKING else WORKING)
    if new_status != status:
        check_transition(status, new_status)
    return LoopMove(target, new_status)


def due_once_sent(
    due_basis: dict[str, Any], sent_at: datetime, zone: ZoneInfo, default_days: int
) -> tuple[datetime, dict[str, Any]]:
    """The loop's deadline once the referral is sent: `closed_within_days_of_sent` (urgent: fewer,
    fixed when the task was raised) on the wall clock. The original anchor stays, so a BH visit
    between the screen and the sending still counts as the first visit."""
    loop = dict(due_basis.get("loop") or {})
    days = int(loop.get("closed_within_days_of_sent") or default_days)
    due = calendar_due(sent_at, "sent", days=days, zone=zone)
    loop |= {"due": "loop closed", "sent_at": due.basis["anchor_at"], "closed_within_days_of_sent": days}
    loop["due_at"] = due.due_at.isoformat()
    return due.due_at, due_basis | {"loop": loop}
