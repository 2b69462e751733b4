"""Screens that change (pure): an amended screen that no longer meets a rule cancels what it raised
unless another active screen still does; a retracted one re-runs those rules on the remaining screens."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from app.rules.config import load_rules
from app.rules.engine import RuleEngine
from app.rules.facts import OpenTask, ScreeningEvent, ScreeningStatus
from app.settings import DEFAULT_RULES_FILE
from tests.unit.test_rules import ADULT, NY, SCREENED_AT, screening


@pytest.fixture
def engine() -> RuleEngine:
    return RuleEngine(load_rules(DEFAULT_RULES_FILE), NY)


REFERRAL = OpenTask("ref", "bh-referral", None, SCREENED_AT, ("s1",), business_status="requested")
RISK = OpenTask("risk", "suicide-risk-response", None, SCREENED_AT, ("s1",))
WITH_BOTH = replace(ADULT, open_tasks=(REFERRAL, RISK))
GAD7 = ScreeningEvent("s2", "GAD-7", 15, True, SCREENED_AT + timedelta(days=1))
GAD7_NEGATIVE = replace(GAD7, score=3, positive=False)


def test_an_amended_screen_that_turns_negative_cancels_what_it_raised(engine: RuleEngine) -> None:
    amended = screening(score=6, positive=False, item9=0)
    effects = engine.on_screening_event(amended, WITH_BOTH)
    assert sorted(c.task_id for c in effects.cancel) == ["ref", "risk"]
    assert all("amended" in c.reason for c in effects.cancel) and effects.create == []


def test_another_positive_screen_still_supports_the_referral(engine: RuleEngine) -> None:
    amended = screening(score=6, positive=False, item9=0)
    effects = engine.on_screening_event(amended, WITH_BOTH, (GAD7,))
    assert [c.task_id for c in effects.cancel] == ["risk"]  # GAD-7 supports the referral, not the risk response
    assert [c.task_id for c in engine.on_screening_event(amended, WITH_BOTH, (GAD7_NEGATIVE,)).cancel] == [
        "ref",
        "risk",
    ]


def test_an_amendment_that_still_meets_the_rules_changes_nothing(engine: RuleEngine) -> None:
    amended = screening(score=20, positive=True, item9=1)
    effects = engine.on_screening_event(amended, WITH_BOTH)
    assert effects.cancel == []
    # Anything raised again is keyed to the same screen: storing it is a no-op (one task per rule per screen).
    assert {t.dedupe_key for t in effects.create} <= {"suicide-risk-response|screening|s1"}


def test_a_retraction_re_runs_the_rules_on_the_remaining_screens(engine: RuleEngine) -> None:
    retracted = screening(status=ScreeningStatus.RETRACTED)
    effects = engine.on_screening_event(retracted, WITH_BOTH, (GAD7,))
    assert sorted(c.task_id for c in effects.cancel) == ["ref", "risk"]
    [again] = effects.create  # GAD-7 meets the referral rule; nothing left meets the risk rule
    assert (again.type, again.dedupe_key, again.triggering_event_ids) == (
        "bh-referral",
        "bh-referral|screening|s2",
        ("s2",),
    )
    assert again.due_at == GAD7.effective_at + timedelta(days=3)
    # The latest of several, and nothing from negative or retracted ones.
    older = replace(GAD7, event_id="s3", effective_at=SCREENED_AT - timedelta(days=20))
    [latest] = engine.on_screening_event(retracted, WITH_BOTH, (older, GAD7)).create
    assert latest.triggering_event_ids == ("s2",)
    gone = replace(GAD7, status=ScreeningStatus.RETRACTED)
    assert engine.on_screening_event(retracted, WITH_BOTH, (GAD7_NEGATIVE, gone)).create == []
