"""Reversals (pure): a cancelled visit (A11, FHIR cancelled / entered-in-error) reopens what it
completed, a cancelled readmission reopens what it superseded, and a cancelled visit is never evidence."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from app.rules.config import load_rules
from app.rules.engine import RuleEngine
from app.rules.facts import ClosedTask, EncounterEvent, EncounterEventKind, EncounterSummary, EvidenceRecord, OpenTask
from app.settings import DEFAULT_RULES_FILE
from tests.unit.test_rules import ADULT, DISCHARGED_AT, ENC, NY, OTHER_ENC, discharge, visit

AFTER = DISCHARGED_AT + timedelta(days=2)


@pytest.fixture
def engine() -> RuleEngine:
    return RuleEngine(load_rules(DEFAULT_RULES_FILE), NY)


def cancelled_visit(encounter_id: str = OTHER_ENC, class_code: str = "AMB") -> EncounterEvent:
    return replace(
        visit(EncounterEventKind.CANCEL_ADMIT, class_code, AFTER), encounter_id=encounter_id, status="cancelled"
    )


def completed_contact(by: str = OTHER_ENC, previous: str = "in-progress") -> ClosedTask:
    return ClosedTask("t1", "post-discharge-contact", "completed", previous, DISCHARGED_AT, completed_by_encounter=by)


def test_a_cancelled_visit_reopens_the_task_it_completed(engine: RuleEngine) -> None:
    patient = replace(ADULT, closed_by_encounter=(completed_contact(),))
    [reopen] = engine.on_encounter_event(cancelled_visit(), patient).reopen
    assert (reopen.task_id, reopen.status) == ("t1", "in-progress")
    assert "cancel-admit" in reopen.reason and "e2" in reopen.reason


def test_other_evidence_keeps_it_completed(engine: RuleEngine) -> None:
    other = EncounterSummary("enc-3", "VR", AFTER + timedelta(days=1), False, status="finished")
    patient = replace(ADULT, closed_by_encounter=(completed_contact(),), encounters=(other,))
    assert engine.on_encounter_event(cancelled_visit(), patient).reopen == []
    # ... but not another cancelled visit.
    patient = replace(patient, encounters=(replace(other, status="cancelled"),))
    assert len(engine.on_encounter_event(cancelled_visit(), patient).reopen) == 1


def test_a_med_rec_record_keeps_med_rec_completed_whatever_visit_is_cancelled(engine: RuleEngine) -> None:
    med_rec = ClosedTask("t2", "medication-reconciliation", "completed", "ready", DISCHARGED_AT, OTHER_ENC)
    record = EvidenceRecord("ev", "http://snomed.info/sct|430193006", AFTER)
    patient = replace(ADULT, closed_by_encounter=(med_rec,), evidence=(record,))
    assert engine.on_encounter_event(cancelled_visit(), patient).reopen == []


def test_a_cancelled_readmission_reopens_what_it_superseded(engine: RuleEngine) -> None:
    superseded = ClosedTask("t3", "post-discharge-contact", "cancelled", "ready", DISCHARGED_AT, None, OTHER_ENC)
    patient = replace(ADULT, closed_by_encounter=(superseded,))
    readmission_cancelled = cancelled_visit(class_code="IMP")
    [reopen] = engine.on_encounter_event(readmission_cancelled, patient).reopen
    assert reopen.status == "ready" and "readmission" in reopen.reason


def test_only_a_voided_encounter_reopens_and_not_for_the_deceased(engine: RuleEngine) -> None:
    patient = replace(ADULT, closed_by_encounter=(completed_contact(),))
    # A13 on the visit: it still began, so it still counts.
    a13 = replace(visit(EncounterEventKind.CANCEL_DISCHARGE, "AMB", AFTER), status="in-progress")
    assert engine.on_encounter_event(a13, patient).reopen == []
    # Another encounter cancelled: not the one that completed it.
    assert engine.on_encounter_event(cancelled_visit("enc-9"), patient).reopen == []
    dead = replace(patient, deceased=True)
    assert engine.on_encounter_event(cancelled_visit(), dead).reopen == []


def test_a_cancelled_visit_is_never_evidence(engine: RuleEngine) -> None:
    gone = EncounterSummary(OTHER_ENC, "AMB", AFTER, False, status="cancelled")
    tasks = {t.type: t for t in engine.on_encounter_event(discharge(), replace(ADULT, encounters=(gone,))).create}
    assert tasks["post-discharge-contact"].completed_by is None
    kept = replace(gone, status="finished")
    tasks = {t.type: t for t in engine.on_encounter_event(discharge(), replace(ADULT, encounters=(kept,))).create}
    assert tasks["post-discharge-contact"].completed_by_encounter == OTHER_ENC
    # A visit's late A04 folded after its A11 leaves it cancelled: no completion.
    patient = replace(ADULT, open_tasks=(OpenTask("t1", "post-discharge-contact", ENC, DISCHARGED_AT),))
    late = replace(visit(EncounterEventKind.REGISTER, "AMB", AFTER), status="cancelled")
    assert engine.on_encounter_event(late, patient).complete == []
