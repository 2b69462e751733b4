"""The task lifecycle: FHIR Task statuses, which moves are allowed, outreach attempts and escalation.

Pure: the API and the rules adapters ask here before they write. Statuses and their meaning follow
http://hl7.org/fhir/task-status; the moves follow the FHIR Task state machine, with `ready` (no
action taken yet, assignment a given) as carecoord's initial status.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

ACTIVE = frozenset({"requested", "received", "accepted", "ready", "in-progress", "on-hold"})
ACTIVE_STATUSES = tuple(sorted(ACTIVE))  # the same, in a fixed order: SQL IN lists that cache and plan alike
TERMINAL = frozenset({"completed", "cancelled", "failed", "rejected", "entered-in-error"})
STATUSES = ACTIVE | TERMINAL | {"draft"}

_MOVES: dict[str, frozenset[str]] = {
    "draft": frozenset({"requested", "ready", "cancelled"}),
    "requested": frozenset({"received", "accepted", "rejected", "ready", "in-progress", "cancelled"}),
    "received": frozenset({"accepted", "rejected", "cancelled"}),
    "accepted": frozenset({"in-progress", "cancelled"}),
    # Evidence can complete a task nobody has started (a follow-up visit the clinic booked itself).
    "ready": frozenset({"in-progress", "on-hold", "completed", "failed", "cancelled"}),
    "in-progress": frozenset({"on-hold", "completed", "failed", "cancelled"}),
    "on-hold": frozenset({"in-progress", "completed", "failed", "cancelled"}),
}


class TransitionError(ValueError):
    pass


def check_transition(current: str, target: str) -> None:
    """Raise TransitionError unless the FHIR Task state machine allows current -> target. Anything
    may be marked entered-in-error (a task raised by mistake); nothing leaves a terminal status."""
    if target not in STATUSES:
        raise TransitionError(f"unknown task status {target!r}")
    if target == "entered-in-error" and current != "entered-in-error":
        return
    if target not in _MOVES.get(current, frozenset()):
        raise TransitionError(f"a {current} task cannot become {target}")


class AttemptOutcome(StrEnum):
    REACHED = "reached"
    LEFT_MESSAGE = "left-message"
    NO_ANSWER = "no-answer"
    WRONG_NUMBER = "wrong-number"
    DECLINED = "declined"


UNSUCCESSFUL = frozenset({AttemptOutcome.LEFT_MESSAGE, AttemptOutcome.NO_ANSWER, AttemptOutcome.WRONG_NUMBER})


@dataclass(frozen=True, slots=True)
class AttemptResult:
    status: str  # the task's status after the attempt
    reason: str | None  # why it ended, when it did
    failed_attempts: int


def after_attempt(status: str, outcome: AttemptOutcome, failed_before: int, max_failed: int) -> AttemptResult:
    """An outreach attempt starts the work; the `max_failed`-th unsuccessful one fails the task
    ("unable to reach"), a decline fails it at once. Reaching the patient leaves completion to the
    facilitator, who records what the contact achieved."""
    if status not in ACTIVE:
        raise TransitionError(f"a {status} task takes no more attempts")
    failed = failed_before + (outcome in UNSUCCESSFUL)
    if outcome is AttemptOutcome.DECLINED:
        return AttemptResult("failed", "patient declined", failed)
    if failed >= max_failed:
        return AttemptResult("failed", "unable to reach", failed)
    return AttemptResult("in-progress" if status in ("ready", "requested", "accepted") else status, None, failed)


class Timeliness(StrEnum):
    ON_TIME = "on-time"
    DUE_SOON = "due-soon"
    OVERDUE = "overdue"


PRIORITIES = ("routine", "urgent", "asap", "stat")  # FHIR request-priority, lowest first


def timeliness(due_at: datetime, now: datetime, due_soon: timedelta) -> Timeliness:
    if now >= due_at:
        return Timeliness.OVERDUE
    if now >= due_at - due_soon:
        return Timeliness.DUE_SOON
    return Timeliness.ON_TIME


def escalated_priority(priority: str) -> str:
    """One step up the FHIR priority scale (routine -> urgent -> asap -> stat)."""
    index = PRIORITIES.index(priority) if priority in PRIORITIES else 0
    return PRIORITIES[min(index + 1, len(PRIORITIES) - 1)]
