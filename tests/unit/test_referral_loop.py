"""The BH referral loop (pure): its milestones as business status, the moves allowed, its due times,
and how screens, visits and consult notes move it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.consumers.fhir_decode import EvidenceItem, FhirDecodeError, decode_fhir
from app.rules.config import load_rules
from app.rules.engine import RuleEngine
from app.rules.facts import EncounterEventKind, EncounterSummary, EvidenceRecord, OpenTask
from app.settings import DEFAULT_RULES_FILE
from app.tasks.lifecycle import TransitionError
from app.tasks.referral import BusinessStatus as B
from app.tasks.referral import due_once_sent, loop_move
from tests.fhir_builder import consult_note, encode
from tests.unit.test_fhir_decode import OPTIONS
from tests.unit.test_rules import ADULT, NY, SCREENED_AT, screening, visit

CONSULT = "http://loinc.org|11488-4"


@pytest.fixture
def engine() -> RuleEngine:
    return RuleEngine(load_rules(DEFAULT_RULES_FILE), NY)


@pytest.mark.parametrize(
    ("status", "current", "target", "by_evidence", "expected"),
    [
        ("ready", "requested", B.SENT, False, ("sent", "in-progress")),
        ("in-progress", "sent", B.SCHEDULED, False, ("scheduled", "in-progress")),
        ("on-hold", "scheduled", B.FIRST_VISIT, False, ("first-visit", "in-progress")),
        ("in-progress", "first-visit", B.SUMMARY_RECEIVED, False, ("summary-received", "completed")),
        ("in-progress", "sent", B.SUMMARY_RECEIVED, False, ("summary-received", "completed")),
        # Evidence proves the referral happened, sent or not.
        ("ready", "requested", B.FIRST_VISIT, True, ("first-visit", "in-progress")),
        ("ready", "requested", B.SUMMARY_RECEIVED, True, ("summary-received", "completed")),
    ],
)
def test_allowed_moves(status: str, current: str, target: B, by_evidence: bool, expected: tuple[str, str]) -> None:
    move = loop_move(status, current, target, by_evidence=by_evidence)
    assert (move.business_status.value, move.status) == expected


@pytest.mark.parametrize(
    ("status", "current", "target", "message"),
    [
        ("ready", "requested", B.SCHEDULED, "sent before scheduled"),
        ("ready", "requested", B.FIRST_VISIT, "sent before first-visit"),
        ("in-progress", "scheduled", B.SENT, "already scheduled"),
        ("in-progress", "sent", B.SENT, "already sent"),
        ("completed", "summary-received", B.SUMMARY_RECEIVED, "completed referral"),
        ("cancelled", "sent", B.SCHEDULED, "cancelled referral"),
        ("ready", None, B.SENT, "not a referral loop"),
    ],
)
def test_refused_moves(status: str, current: str | None, target: B, message: str) -> None:
    with pytest.raises(TransitionError, match=message):
        loop_move(status, current, target)


def test_sending_starts_the_loop_clock_and_keeps_the_screen_as_anchor() -> None:
    basis = {"policy": "calendar", "anchor": "event", "anchor_at": SCREENED_AT.isoformat(), "days": 3}
    sent = datetime(2026, 11, 21, 14, 0, tzinfo=UTC)
    due, new = due_once_sent(basis | {"loop": {"closed_within_days_of_sent": 30}}, sent, NY, 30)
    assert due == sent + timedelta(days=30) and new["anchor_at"] == SCREENED_AT.isoformat()
    assert new["loop"]["sent_at"] == sent.isoformat() and new["loop"]["due_at"] == due.isoformat()
    urgent, _ = due_once_sent(basis | {"loop": {"closed_within_days_of_sent": 7, "urgent": True}}, sent, NY, 30)
    assert urgent == sent + timedelta(days=7)


def test_a_referral_starts_requested_and_urgent_when_item9_flags_risk(engine: RuleEngine) -> None:
    [routine] = [t for t in engine.on_screening_event(screening(item9=0), ADULT).create if t.type == "bh-referral"]
    assert (routine.business_status, routine.priority) == ("requested", "routine")
    assert routine.due_basis["loop"] == {"due": "referral sent", "closed_within_days_of_sent": 30, "urgent": False}
    assert routine.due_at == SCREENED_AT + timedelta(days=3)  # referral sent within 3 days
    [urgent] = [t for t in engine.on_screening_event(screening(item9=2), ADULT).create if t.type == "bh-referral"]
    assert (urgent.business_status, urgent.priority) == ("requested", "urgent")
    assert urgent.due_basis["loop"]["closed_within_days_of_sent"] == 7


def test_a_referral_is_born_further_along_when_its_evidence_is_on_file(engine: RuleEngine) -> None:
    later = SCREENED_AT + timedelta(days=5)
    seen = replace(ADULT, encounters=(EncounterSummary("v", "AMB", later, True),))
    [task] = [t for t in engine.on_screening_event(screening(), seen).create if t.type == "bh-referral"]
    assert (task.business_status, task.completed_by) == ("first-visit", None)
    # A non-BH office visit is not the BH provider's first visit.
    office = replace(ADULT, encounters=(EncounterSummary("v", "AMB", later, False),))
    [task] = [t for t in engine.on_screening_event(screening(), office).create if t.type == "bh-referral"]
    assert task.business_status == "requested"
    summarised = replace(ADULT, evidence=(EvidenceRecord("doc", CONSULT, later),))
    [task] = [t for t in engine.on_screening_event(screening(), summarised).create if t.type == "bh-referral"]
    assert task.business_status == "summary-received" and task.completed_by is not None


def test_a_consult_note_closes_the_loop_and_a_visit_reaches_first_visit_once(engine: RuleEngine) -> None:
    open_referral = OpenTask("t1", "bh-referral", None, SCREENED_AT, ("s1",), business_status="sent")
    patient = replace(ADULT, open_tasks=(open_referral,))
    [done] = engine.on_evidence(EvidenceRecord("doc", CONSULT, SCREENED_AT + timedelta(days=9)), patient).complete
    assert (done.task_id, done.business_status) == ("t1", "summary-received")
    # A note from before the screen is not this referral's summary.
    assert not engine.on_evidence(EvidenceRecord("doc", CONSULT, SCREENED_AT - timedelta(days=2)), patient).complete
    bh_visit = visit(EncounterEventKind.REGISTER, "VR", SCREENED_AT + timedelta(days=4), behavioral_health=True)
    assert [a.business_status for a in engine.on_encounter_event(bh_visit, patient).advance] == ["first-visit"]
    visited = replace(patient, open_tasks=(replace(open_referral, business_status="first-visit"),))
    assert engine.on_encounter_event(bh_visit, visited).advance == []
    before = visit(EncounterEventKind.REGISTER, "AMB", SCREENED_AT - timedelta(days=1), behavioral_health=True)
    assert engine.on_encounter_event(before, patient).advance == []


# -- decoding consult notes ------------------------------------------------------------------------


def decode(resource: dict[str, Any]) -> Any:
    return decode_fhir(encode(resource), OPTIONS, frozenset({CONSULT}))


def test_a_current_consult_note_is_evidence_dated_by_its_date() -> None:
    [item] = decode(consult_note()).items
    assert isinstance(item, EvidenceItem) and item.counts
    assert (item.resource_type, item.code) == ("DocumentReference", CONSULT)
    assert item.performed_at == datetime(2026, 12, 1, 21, 0, tzinfo=UTC)
    [draft] = decode(consult_note(doc_status="preliminary")).items
    assert not draft.counts  # stored, but a preliminary note is not the summary
    [retracted] = decode(consult_note(status="entered-in-error")).items
    assert not retracted.counts


@pytest.mark.parametrize(
    ("resource", "status", "field"),
    [
        (consult_note(code="18842-5"), 422, "DocumentReference.type"),  # a discharge summary: not a consult note
        (consult_note(date=None), 422, "DocumentReference.date"),
        (consult_note(status="final"), 400, "DocumentReference.status"),
    ],
)
def test_bad_consult_notes_are_refused_naming_the_element(resource: dict[str, Any], status: int, field: str) -> None:
    with pytest.raises(FhirDecodeError) as info:
        decode(resource)
    assert (info.value.http_status, info.value.field) == (status, field)


def test_a_referral_from_before_loop_tracking_is_left_to_its_summary(engine: RuleEngine) -> None:
    legacy = OpenTask("t0", "bh-referral", None, SCREENED_AT, ("s0",))  # no business status
    patient = replace(ADULT, open_tasks=(legacy,))
    bh_visit = visit(EncounterEventKind.REGISTER, "AMB", SCREENED_AT + timedelta(days=4), behavioral_health=True)
    assert engine.on_encounter_event(bh_visit, patient).advance == []
    [done] = engine.on_evidence(EvidenceRecord("doc", CONSULT, SCREENED_AT + timedelta(days=9)), patient).complete
    assert done.task_id == "t0"
