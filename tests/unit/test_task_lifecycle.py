from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.tasks.lifecycle import (
    ACTIVE,
    TERMINAL,
    AttemptOutcome,
    Timeliness,
    TransitionError,
    after_attempt,
    check_transition,
    escalated_priority,
    timeliness,
)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        ("ready", "in-progress"),
        ("ready", "completed"),
        ("in-progress", "on-hold"),
        ("on-hold", "in-progress"),
        ("in-progress", "completed"),
        ("in-progress", "failed"),
        ("requested", "received"),
        ("received", "accepted"),
        ("accepted", "in-progress"),
        ("draft", "ready"),
        ("completed", "entered-in-error"),
        ("ready", "cancelled"),
    ],
)
def test_allowed_moves(current: str, target: str) -> None:
    check_transition(current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        ("completed", "in-progress"),
        ("cancelled", "ready"),
        ("failed", "completed"),
        ("entered-in-error", "entered-in-error"),
        ("received", "completed"),
        ("ready", "requested"),
        ("ready", "finished"),
    ],
)
def test_refused_moves(current: str, target: str) -> None:
    with pytest.raises(TransitionError):
        check_transition(current, target)


def test_nothing_leaves_a_terminal_status_but_entered_in_error() -> None:
    for status in TERMINAL - {"entered-in-error"}:
        for target in ACTIVE | TERMINAL - {"entered-in-error"}:
            with pytest.raises(TransitionError):
                check_transition(status, target)


def test_third_unsuccessful_attempt_fails_the_task_unable_to_reach() -> None:
    first = after_attempt("ready", AttemptOutcome.NO_ANSWER, 0, 3)
    assert (first.status, first.failed_attempts, first.reason) == ("in-progress", 1, None)
    second = after_attempt(first.status, AttemptOutcome.LEFT_MESSAGE, first.failed_attempts, 3)
    assert (second.status, second.failed_attempts) == ("in-progress", 2)
    third = after_attempt(second.status, AttemptOutcome.WRONG_NUMBER, second.failed_attempts, 3)
    assert (third.status, third.reason) == ("failed", "unable to reach")


def test_reaching_the_patient_does_not_count_as_a_failure_and_a_decline_fails_at_once() -> None:
    reached = after_attempt("ready", AttemptOutcome.REACHED, 2, 3)
    assert (reached.status, reached.failed_attempts) == ("in-progress", 2)
    declined = after_attempt("in-progress", AttemptOutcome.DECLINED, 0, 3)
    assert (declined.status, declined.reason) == ("failed", "patient declined")
    on_hold = after_attempt("on-hold", AttemptOutcome.NO_ANSWER, 0, 3)
    assert on_hold.status == "on-hold"


def test_closed_tasks_take_no_attempts() -> None:
    with pytest.raises(TransitionError):
        after_attempt("completed", AttemptOutcome.REACHED, 0, 3)


def test_timeliness_and_escalation() -> None:
    due = datetime(2026, 11, 27, 19, 0, tzinfo=UTC)
    day = timedelta(hours=24)
    assert timeliness(due, due - timedelta(days=2), day) is Timeliness.ON_TIME
    assert timeliness(due, due - timedelta(hours=3), day) is Timeliness.DUE_SOON
    assert timeliness(due, due, day) is Timeliness.OVERDUE
    assert [escalated_priority(p) for p in ("routine", "urgent", "asap", "stat")] == ["urgent", "asap", "stat", "stat"]
