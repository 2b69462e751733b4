"""FHIR clinical payloads -> FhirMessage: validation errors name the element; identities make resends no-ops."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from app.consumers.fhir_decode import (
    EncounterItem,
    FhirDecodeError,
    ObservationItem,
    QuestionnaireItem,
    ResponseItem,
    decode_fhir,
)
from app.consumers.hl7v2_decode import DecodeOptions
from app.encounters.notice import PatientIdentifier
from app.rules.facts import EncounterEventKind
from tests.fhir_builder import LOINC, MRN_SYSTEM, encode, fixture, observation, phq9_response, transaction

OPTIONS = DecodeOptions(default_zone=ZoneInfo("America/New_York"))


def decode(resource: dict[str, Any] | bytes) -> Any:
    return decode_fhir(resource if isinstance(resource, bytes) else encode(resource), OPTIONS)


def refused(resource: dict[str, Any] | bytes) -> FhirDecodeError:
    with pytest.raises(FhirDecodeError) as info:
        decode(resource)
    return info.value


def test_encounter_maps_like_adt_with_its_status_as_the_event() -> None:
    [item] = decode(fixture("encounter-inpatient-finished")).items
    assert isinstance(item, EncounterItem)
    notice = item.notice
    assert notice.kind is EncounterEventKind.DISCHARGE and notice.source == "fhir"
    assert (notice.facility, notice.visit_number, notice.class_code) == ("GOODHEALTH", "V0001", "IMP")
    assert notice.event_time == datetime(2026, 11, 20, 19, 5, tzinfo=UTC)  # meta.lastUpdated
    assert notice.discharge_time == datetime(2026, 11, 20, 19, 0, tzinfo=UTC)
    assert notice.identifiers == (PatientIdentifier(MRN_SYSTEM, "MRN12345"),)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        ("planned", EncounterEventKind.PREADMIT),
        ("in-progress", EncounterEventKind.ADMIT),
        ("cancelled", EncounterEventKind.CANCEL_ADMIT),
        ("entered-in-error", EncounterEventKind.CANCEL_ADMIT),
        ("unknown", EncounterEventKind.UPDATE),
    ],
)
def test_encounter_status_chooses_the_event(status: str, kind: EncounterEventKind) -> None:
    encounter = fixture("encounter-inpatient-finished") | {"status": status}
    del encounter["meta"]
    notice = decode(encounter).items[0].notice
    assert notice.kind is kind
    assert notice.event_time == datetime(2026, 11, 15, 13, 30, tzinfo=UTC)  # no lastUpdated: the period start
    assert notice.discharge_time is None


def test_encounter_needs_a_patient_identifier_and_a_facility() -> None:
    encounter = fixture("encounter-inpatient-finished") | {"subject": {"reference": f"Patient/{uuid.uuid4()}"}}
    assert refused(encounter).field == "Encounter.subject"
    encounter = fixture("encounter-inpatient-finished")
    del encounter["serviceProvider"]
    assert refused(encounter).field == "Encounter.serviceProvider"


def test_subject_forms() -> None:
    contained = observation()
    contained["contained"] = [
        {
            "resourceType": "Patient",
            "id": "p",
            "identifier": [{"system": MRN_SYSTEM, "value": "C-1"}],
            "gender": "female",
        }
    ]
    contained["subject"] = {"reference": "#p"}
    ref = decode(contained).items[0].patient
    assert ref.identifiers == (PatientIdentifier(MRN_SYSTEM, "C-1"),) and ref.sex == "F"
    local = uuid.uuid4()
    assert decode(observation() | {"subject": {"reference": f"Patient/{local}"}}).items[0].patient.local_id == local
    error = refused(observation() | {"subject": {"display": "Jane"}})
    assert (error.field, error.http_status) == ("Observation.subject", 422)
    bundled = transaction(observation() | {"subject": {"reference": "Patient/elsewhere"}})
    assert refused(bundled).field == "Bundle.entry[0].resource.subject"


def test_observation_value_forms_and_item9_component() -> None:
    by_integer = decode(observation(value={"valueInteger": 14})).items[0]
    by_quantity = decode(observation()).items[0]
    assert isinstance(by_integer, ObservationItem) and by_integer.value == by_quantity.value == 14
    with_item9 = observation()
    with_item9["component"] = [
        {
            "code": {"coding": [{"system": LOINC, "code": "44260-8"}]},
            "valueCodeableConcept": {"coding": [{"system": LOINC, "code": "LA6570-1"}]},
        }
    ]
    assert decode(with_item9).items[0].item9 == 2
    preliminary = observation(status="preliminary")
    del preliminary["valueQuantity"]
    assert decode(preliminary).items[0].value is None  # stored, but no result yet


@pytest.mark.parametrize(
    ("change", "field", "status"),
    [
        ({"status": "finished"}, "Observation.status", 400),
        ({"valueQuantity": {"value": 14.5, "unit": "{score}"}}, "Observation.valueQuantity.value", 422),
        ({"valueQuantity": {"value": 14, "unit": "points"}}, "Observation.valueQuantity.unit", 422),
        (
            {"valueQuantity": None, "valueCodeableConcept": {"text": "moderate"}},
            "Observation.valueCodeableConcept",
            422,
        ),
        ({"effectiveDateTime": None}, "Observation.effective", 422),
        ({"code": {"coding": [{"system": "http://snomed.info/sct", "code": "720433000"}]}}, "Observation.code", 422),
    ],
)
def test_observation_errors_name_the_element(change: dict[str, Any], field: str, status: int) -> None:
    resource = {k: v for k, v in (observation() | change).items() if v is not None}
    error = refused(resource)
    assert (error.field, error.http_status) == (field, status)


def test_bundle_rules() -> None:
    assert refused(b"[]").field == "resource"
    assert refused({"resourceType": "Bundle", "type": "document", "entry": []}).field == "Bundle.type"
    medication = transaction(observation(), {"resourceType": "Medication", "id": "m"})
    assert refused(medication).field == "Bundle.entry[1].resource"
    only_patient = transaction({"resourceType": "Patient", "identifier": [{"system": MRN_SYSTEM, "value": "1"}]})
    assert refused(only_patient).field == "Bundle.entry"
    delete = transaction(observation())
    delete["entry"][0]["request"]["method"] = "DELETE"
    assert refused(delete).field == "Bundle.entry[0].request.method"


def test_questionnaires_come_first_and_score_their_responses_in_the_same_bundle() -> None:
    message = decode(transaction(phq9_response(), fixture("questionnaire-phq9")))
    first, second = message.items
    assert isinstance(first, QuestionnaireItem) and first.identity == "http://example.org/fhir/Questionnaire/phq-9|2.0"
    assert isinstance(second, ResponseItem) and second.score is not None and second.score.score == 14
    assert decode(phq9_response()).items[0].score is None  # scored later against the registry


def test_identity_and_content_make_the_idempotency_key() -> None:
    original = decode(observation()).items[0]
    resent = decode(observation() | {"id": "other", "meta": {"versionId": "7"}}).items[0]
    amended = decode(observation(status="amended", value={"valueInteger": 9})).items[0]
    assert original.idempotency_key == resent.idempotency_key
    assert amended.identity == original.identity and amended.idempotency_key != original.idempotency_key
    anonymous = observation()
    del anonymous["identifier"]
    assert decode(anonymous).items[0].identity.startswith("content:")
