"""Medication reconciliation closed by evidence: the rules' window and codes, and the FHIR decoding
of Procedure / Observation evidence (pure: no I/O)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app.consumers.fhir_decode import EvidenceItem, FhirDecodeError, ObservationItem, decode_fhir
from app.rules.config import RulesFileError, load_rules
from app.rules.engine import RuleEngine
from app.rules.facts import ClosedTask, EvidenceRecord, OpenTask
from app.settings import DEFAULT_RULES_FILE
from tests.fhir_builder import (
    CPT,
    MED_REC_CPT2,
    encode,
    med_rec_observation,
    med_rec_procedure,
    observation,
    transaction,
)
from tests.unit.test_fhir_decode import OPTIONS
from tests.unit.test_rules import ADULT, DISCHARGED_AT, NY, discharge

SNOMED_MED_REC = "http://snomed.info/sct|430193006"
CPT_MED_REC = f"{CPT}|{MED_REC_CPT2}"


@pytest.fixture
def engine() -> RuleEngine:
    return RuleEngine(load_rules(DEFAULT_RULES_FILE), NY)


def open_tasks(anchor: datetime = DISCHARGED_AT) -> tuple[OpenTask, ...]:
    return (
        OpenTask("mr", "medication-reconciliation", "enc", anchor),
        OpenTask("contact", "post-discharge-contact", "enc", anchor),
    )


def record(at: datetime, code: str = SNOMED_MED_REC) -> EvidenceRecord:
    return EvidenceRecord("ev1", code, at)


def test_shipped_rules_take_snomed_and_cpt2_as_med_rec_evidence(engine: RuleEngine) -> None:
    consult_notes = {"http://loinc.org|11488-4", "http://loinc.org|34785-6"}  # the BH referral's summary
    assert engine.evidence_codes == {SNOMED_MED_REC, CPT_MED_REC} | consult_notes


@pytest.mark.parametrize(
    ("performed", "completes"),
    [
        # Discharged 14:00 local on Fri 2026-11-20; HEDIS MRP counts the discharge date through 30 days after.
        (datetime(2026, 11, 20, 14, 0, tzinfo=UTC), True),  # 09:00 local, same date as the discharge
        (DISCHARGED_AT + timedelta(hours=20), True),
        (datetime(2026, 12, 21, 4, 59, tzinfo=UTC), True),  # 23:59 local on day 30
        (datetime(2026, 12, 21, 5, 0, tzinfo=UTC), False),  # 00:00 local on day 31
        (datetime(2026, 11, 20, 4, 59, tzinfo=UTC), False),  # 23:59 local the day before
    ],
)
def test_evidence_completes_med_rec_within_the_mrp_window(
    engine: RuleEngine, performed: datetime, completes: bool
) -> None:
    patient = replace(ADULT, open_tasks=open_tasks())
    effects = engine.on_evidence(record(performed), patient)
    assert [c.task_id for c in effects.complete] == (["mr"] if completes else [])
    assert not effects.cancel and not effects.create
    if completes:
        [done] = effects.complete
        assert done.evidence_event_id == "ev1" and SNOMED_MED_REC in done.reason


def test_other_codes_and_other_tasks_are_not_evidence(engine: RuleEngine) -> None:
    patient = replace(ADULT, open_tasks=open_tasks())
    at = DISCHARGED_AT + timedelta(days=1)
    assert not engine.on_evidence(record(at, "http://snomed.info/sct|182836005"), patient).complete
    # The CPT II code completes med rec, and only med rec (a reconciliation is not a contact).
    assert [c.task_id for c in engine.on_evidence(record(at, CPT_MED_REC), patient).complete] == ["mr"]


def test_evidence_on_file_before_the_adt_completes_the_task_when_raised(engine: RuleEngine) -> None:
    """Late ADT: the reconciliation's record arrived before the discharge's A03."""
    after = replace(ADULT, evidence=(record(DISCHARGED_AT + timedelta(days=2)),))
    tasks = {t.type: t for t in engine.on_encounter_event(discharge(), after).create}
    assert tasks["medication-reconciliation"].completed_by is not None
    assert "430193006" in tasks["medication-reconciliation"].completed_by
    assert tasks["post-discharge-contact"].completed_by is None
    # A reconciliation done before this discharge (for an earlier stay) does not count for it.
    before = replace(ADULT, evidence=(record(DISCHARGED_AT - timedelta(days=3)),))
    tasks = {t.type: t for t in engine.on_encounter_event(discharge(), before).create}
    assert tasks["medication-reconciliation"].completed_by is None


def test_the_window_and_codes_are_rules_file_policy(tmp_path: Path) -> None:
    text = DEFAULT_RULES_FILE.read_text()
    path = tmp_path / "rules.toml"
    path.write_text(
        text.replace("evidence_window_days = 30", "evidence_window_days = 2").replace(
            ', "http://www.ama-assn.org/go/cpt|1111F"', ""
        )
    )
    engine = RuleEngine(load_rules(path), NY)
    patient = replace(ADULT, open_tasks=open_tasks())
    assert SNOMED_MED_REC in engine.evidence_codes and CPT_MED_REC not in engine.evidence_codes
    assert engine.on_evidence(record(DISCHARGED_AT + timedelta(days=2)), patient).complete
    assert not engine.on_evidence(record(DISCHARGED_AT + timedelta(days=3)), patient).complete
    path.write_text(text.replace('"http://snomed.info/sct|430193006"', '"430193006"'))
    with pytest.raises(RulesFileError, match="system\\|code"):
        load_rules(path)


# -- decoding -------------------------------------------------------------------------------------


def decode(resource: dict[str, Any], codes: frozenset[str] = frozenset({SNOMED_MED_REC, CPT_MED_REC})) -> Any:
    return decode_fhir(encode(resource), OPTIONS, codes)


def refused(resource: dict[str, Any], codes: frozenset[str] = frozenset({SNOMED_MED_REC, CPT_MED_REC})) -> Any:
    with pytest.raises(FhirDecodeError) as info:
        decode(resource, codes)
    return info.value


def test_completed_procedure_is_evidence() -> None:
    [item] = decode(med_rec_procedure()).items
    assert isinstance(item, EvidenceItem) and item.counts
    assert (item.resource_type, item.code, item.status) == ("Procedure", SNOMED_MED_REC, "completed")
    assert item.performed_at == datetime(2026, 11, 21, 15, 0, tzinfo=UTC)
    assert item.patient.patient_key.value == "MRN12345"
    assert item.identity == "http://example.org/fhir/procedure|MR-1"


def test_procedure_period_counts_at_its_end_and_unfinished_ones_do_not_count() -> None:
    period = med_rec_procedure(performed=None) | {
        "performedPeriod": {"start": "2026-11-21T09:00:00-05:00", "end": "2026-11-21T09:30:00-05:00"}
    }
    [item] = decode(period).items
    assert item.performed_at == datetime(2026, 11, 21, 14, 30, tzinfo=UTC)
    [item] = decode(med_rec_procedure(status="in-progress", performed=None)).items
    assert isinstance(item, EvidenceItem) and not item.counts
    [item] = decode(med_rec_procedure(status="entered-in-error")).items
    assert not item.counts


def test_cpt2_observation_is_evidence_and_screening_observations_are_unchanged() -> None:
    [item] = decode(med_rec_observation()).items
    assert isinstance(item, EvidenceItem) and item.counts and item.code == CPT_MED_REC
    [screen] = decode(observation()).items
    assert isinstance(screen, ObservationItem)


def test_procedure_and_observation_evidence_in_a_transaction_bundle() -> None:
    items = decode(transaction(med_rec_procedure(), med_rec_observation(), observation(mrn="MRN12345"))).items
    assert [type(i).__name__ for i in items] == ["EvidenceItem", "EvidenceItem", "ObservationItem"]


@pytest.mark.parametrize(
    ("resource", "codes", "status", "field", "message"),
    [
        (med_rec_procedure(code="80146002"), None, 422, "Procedure.code", "unsupported Procedure.code"),
        # Without the rules naming a code, neither resource is evidence: the CPT II Observation is refused.
        (med_rec_observation(), frozenset(), 422, "Observation.code", "unsupported Observation.code"),
        (med_rec_procedure(performed=None), None, 422, "Procedure.performed", "performed"),
        (med_rec_observation(effective="") | {"effectiveDateTime": None}, None, 422, "Observation.effective", "when"),
        (med_rec_procedure(status="done"), None, 400, "Procedure.status", "not one of"),
        ({k: v for k, v in med_rec_procedure().items() if k != "subject"}, None, 400, "Procedure.subject", ""),
    ],
)
def test_bad_evidence_is_refused_naming_the_element(
    resource: dict[str, Any], codes: frozenset[str] | None, status: int, field: str, message: str
) -> None:
    error = refused(resource, codes if codes is not None else frozenset({SNOMED_MED_REC, CPT_MED_REC}))
    assert (error.http_status, error.field) == (status, field)
    assert message in error.reason


def test_a_withdrawn_record_reopens_what_it_completed_unless_other_evidence_does(engine: RuleEngine) -> None:
    done = ClosedTask("mr", "medication-reconciliation", "completed", "in-progress", DISCHARGED_AT)
    patient = replace(ADULT, closed_by_encounter=(done,))
    [reopen] = engine.on_evidence_retracted("ev1", patient).reopen
    assert (reopen.task_id, reopen.status) == ("mr", "in-progress") and "ev1" in reopen.reason
    other = record(DISCHARGED_AT + timedelta(days=3), CPT_MED_REC)
    assert engine.on_evidence_retracted("ev1", replace(patient, evidence=(other,))).reopen == []
    assert engine.on_evidence_retracted("ev1", replace(patient, deceased=True)).reopen == []
