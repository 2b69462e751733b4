"""Stored encounter -> FHIR R4 Encounter (validated with fhir.resources' R4B models) and the CapabilityStatement."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.encounter import Encounter as FhirEncounter

from app.encounters.sensitivity import BH_LABELS, PART2_LABELS
from app.fhir.capability import capability_statement
from app.fhir.encounter import NUBC_DISCHARGE_STATUS, encounter_resource, visit_system

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
# R4 required binding http://hl7.org/fhir/ValueSet/encounter-status (fhir.resources does not check bindings)
ENCOUNTER_STATUSES = {
    "planned", "arrived", "triaged", "in-progress", "onleave", "finished", "cancelled", "entered-in-error", "unknown",
}  # fmt: skip


@dataclass
class Row:
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    patient_id: uuid.UUID = field(default_factory=uuid.uuid4)
    facility: str = "GOODHEALTH"
    visit_number: str | None = "V0001"
    status: str = "finished"
    class_system: str | None = ACT_CODE
    class_code: str | None = "IMP"
    hospital_service: str | None = "MED"
    location: str | None = "4W^401^A"
    discharge_disposition: str | None = "01"
    admit_at: datetime | None = datetime(2026, 11, 15, 13, 30, tzinfo=UTC)
    discharge_at: datetime | None = datetime(2026, 11, 20, 19, 0, tzinfo=UTC)
    diagnoses: list[list[str | None]] = field(default_factory=lambda: [["I10", "I10"]])
    security_labels: list[str] = field(default_factory=list)
    updated_at: datetime | None = datetime(2026, 11, 20, 19, 0, 5, tzinfo=UTC)


def valid(resource: dict[str, Any]) -> FhirEncounter:
    model = FhirEncounter.model_validate(resource)
    assert resource["status"] in ENCOUNTER_STATUSES
    return model


def test_full_encounter() -> None:
    row = Row()
    resource = encounter_resource(row)
    valid(resource)
    assert resource["id"] == str(row.id)
    assert resource["identifier"] == [
        {
            "use": "usual",
            "type": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "VN", "display": "Visit number"}
                ]
            },
            "system": "urn:carecoord:visit:GOODHEALTH",
            "value": "V0001",
        }
    ]
    assert resource["status"] == "finished"
    assert resource["class"] == {"system": ACT_CODE, "code": "IMP", "display": "inpatient encounter"}
    assert resource["subject"] == {"reference": f"Patient/{row.patient_id}"}
    assert resource["period"] == {"start": "2026-11-15T13:30:00+00:00", "end": "2026-11-20T19:00:00+00:00"}
    assert resource["serviceType"]["coding"][0]["code"] == "MED"
    assert resource["hospitalization"] == {
        "dischargeDisposition": {"coding": [{"system": NUBC_DISCHARGE_STATUS, "code": "01"}]}
    }
    assert resource["location"] == [{"location": {"display": "4W, 401, A"}, "status": "completed"}]
    assert resource["reasonCode"] == [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10"}]}]
    assert resource["meta"] == {"lastUpdated": "2026-11-20T19:00:05+00:00"}
    assert "versionId" not in resource["meta"]


def test_minimal_encounter_is_still_valid() -> None:
    row = Row(
        visit_number=None,
        status="planned",
        class_system=None,
        class_code=None,
        hospital_service=None,
        location=None,
        discharge_disposition=None,
        admit_at=None,
        discharge_at=None,
        diagnoses=[],
        updated_at=None,
    )
    resource = encounter_resource(row)
    valid(resource)
    # Encounter.class is 1..1 in R4: no class from the feed is an explicit "unknown".
    assert resource["class"]["code"] == "UNK"
    for absent in ("identifier", "period", "serviceType", "hospitalization", "location", "reasonCode", "meta"):
        assert absent not in resource


def test_instants_are_utc_with_an_offset() -> None:
    local = timezone(timedelta(hours=5, minutes=30))
    resource = encounter_resource(Row(admit_at=datetime(2015, 2, 8, 15, 54, 19, tzinfo=local), discharge_at=None))
    valid(resource)
    assert resource["period"] == {"start": "2015-02-08T10:24:19+00:00"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("01", {"coding": [{"system": NUBC_DISCHARGE_STATUS, "code": "01"}]}),
        ("20", {"coding": [{"system": NUBC_DISCHARGE_STATUS, "code": "20"}]}),
        # not a UB-04 code: no made-up system, the sender's text is kept
        ("Admitted as Inpatient", {"text": "Admitted as Inpatient"}),
        ("HOME", {"text": "HOME"}),
    ],
)
def test_discharge_disposition(value: str, expected: dict[str, Any]) -> None:
    resource = encounter_resource(Row(discharge_disposition=value))
    valid(resource)
    assert resource["hospitalization"]["dischargeDisposition"] == expected


def test_diagnoses_become_reason_codes_with_fhir_systems() -> None:
    row = Row(
        diagnoses=[
            ["422504002", "SCT"],
            ["F10.20", "ICD10CM"],
            ["E11.9", "I10"],
            ["123", "LOCALDX"],
            ["456", None],
            ["X1", "http://example.org/dx"],
        ]
    )
    resource = encounter_resource(row)
    valid(resource)
    assert resource["reasonCode"] == [
        {"coding": [{"system": "http://snomed.info/sct", "code": "422504002"}]},
        {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "F10.20"}]},
        {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "E11.9"}]},
        {"coding": [{"code": "123"}], "text": "123 (LOCALDX)"},
        {"coding": [{"code": "456"}], "text": "456"},
        {"coding": [{"system": "http://example.org/dx", "code": "X1"}]},
    ]


def test_security_labels() -> None:
    resource = encounter_resource(Row(security_labels=[*BH_LABELS, *PART2_LABELS]))
    valid(resource)
    assert resource["meta"]["security"] == [
        {"system": ACT_CODE, "code": "PSY"},
        {"system": ACT_CODE, "code": "ETH"},
        {"system": ACT_CODE, "code": "42CFRPart2"},
        {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"},
    ]


def test_local_service_and_v2_class() -> None:
    row = Row(hospital_service="PSY", class_system="http://terminology.hl7.org/CodeSystem/v2-0004", class_code="B")
    resource = encounter_resource(row)
    valid(resource)
    assert resource["serviceType"] == {"text": "PSY"}  # not an HL7 table 0069 value
    assert resource["class"] == {"system": "http://terminology.hl7.org/CodeSystem/v2-0004", "code": "B"}


@pytest.mark.parametrize(
    ("status", "location_status"),
    [("planned", "planned"), ("in-progress", "active"), ("finished", "completed"), ("cancelled", None)],
)
def test_location_status_follows_the_encounter(status: str, location_status: str | None) -> None:
    resource = encounter_resource(Row(status=status))
    valid(resource)
    assert resource["location"][0].get("status") == location_status


def test_visit_system_is_a_valid_uri_for_any_facility_name() -> None:
    assert visit_system("Ntierprise Clinic") == "urn:carecoord:visit:Ntierprise%20Clinic"
    assert visit_system("A/B|C") == "urn:carecoord:visit:A%2FB%7CC"
    valid(encounter_resource(Row(facility="Ntierprise Clinic")))


def test_capability_statement_is_valid_r4() -> None:
    statement = capability_statement("http://carecoord.test/fhir", now=datetime(2026, 1, 1, tzinfo=UTC))
    CapabilityStatement.model_validate(statement)
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["kind"] == "instance" and statement["implementation"]["url"] == "http://carecoord.test/fhir"
    assert "json" in statement["format"]
    rest = statement["rest"][0]
    assert rest["mode"] == "server"
    encounter, observation, procedure, document, questionnaire, response = rest["resource"][:6]
    assert [r["type"] for r in rest["resource"][6:]] == ["Task", "CarePlan", "Patient", "Consent", "AuditEvent"]
    assert encounter["type"] == "Encounter"
    assert {i["code"] for i in encounter["interaction"]} == {"read", "search-type", "create"}
    assert [observation["type"], procedure["type"], document["type"], questionnaire["type"], response["type"]] == [
        "Observation",
        "Procedure",
        "DocumentReference",
        "Questionnaire",
        "QuestionnaireResponse",
    ]
    assert {p["name"] for p in observation["searchParam"]} == {"patient", "code"}
    assert [i["code"] for i in questionnaire["interaction"]] == ["create"]
    assert [i["code"] for i in procedure["interaction"]] == ["create"]  # medication reconciliation evidence
    assert [i["code"] for i in document["interaction"]] == ["create"]  # the BH referral's consult note
    assert {i["code"] for i in rest["interaction"]} == {"transaction", "batch"}
    assert {p["name"]: p["type"] for p in encounter["searchParam"]} == {
        "patient": "reference",
        "date": "date",
        "class": "token",
        "status": "token",
    }
    assert rest["operation"] == [
        {
            "name": "process-message",
            "definition": "http://hl7.org/fhir/OperationDefinition/MessageHeader-process-message",
        }
    ]
