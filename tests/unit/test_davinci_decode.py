"""Da Vinci notification Bundles -> EncounterNotice: the IG's sample Bundles, and what is refused."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from app.consumers.davinci_decode import decode_davinci
from app.consumers.hl7v2_decode import DecodeOptions
from app.encounters.notice import DecodeError, Diagnosis, EncounterNotice, PatientIdentifier
from app.rules.facts import EncounterEventKind

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "samples" / "fhir"
OPTIONS = DecodeOptions(default_zone=ZoneInfo("America/New_York"))
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
MRN = PatientIdentifier("http://example.org/fhir/mrn", "06e1f0dd-5fbe-4480-9bb4-6b54ec02d31b", "MR")
VISIT = "Elden718Halvorson12420181021T2122150700"
# Encounter.period.start 2018-10-21T21:22:15-07:00
ADMITTED = datetime(2018, 10, 22, 4, 22, 15, tzinfo=UTC)


def sample(kind: str) -> dict[str, Any]:
    return json.loads((SAMPLES / f"davinci-{kind}-notification-message-bundle-01.json").read_text(encoding="utf-8"))


def decode(bundle: dict[str, Any] | bytes) -> EncounterNotice:
    return decode_davinci(bundle if isinstance(bundle, bytes) else json.dumps(bundle).encode(), OPTIONS)


def resource(bundle: dict[str, Any], resource_type: str) -> dict[str, Any]:
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type)


def test_discharge_sample() -> None:
    n = decode(sample("discharge"))
    assert (n.source, n.kind, n.message_type) == ("davinci", EncounterEventKind.DISCHARGE, "notification-discharge")
    assert n.message_id == "discharge-notification-message-bundle-01"
    assert n.message_identity == "davinci|discharge-notification-message-bundle-01"
    assert n.idempotency_key == f"{n.message_identity}|{n.content_hash[:32]}"
    assert n.event_time == datetime(2020, 8, 17, 19, 0, 15, 888493, tzinfo=UTC)  # Bundle.timestamp
    assert n.admit_time == ADMITTED
    assert n.discharge_time == datetime(2018, 10, 24, 5, 22, 15, tzinfo=UTC)  # 2018-10-23T22:22:15-07:00
    assert (n.class_system, n.class_code) == (ACT_CODE, "IMP")
    assert n.discharge_disposition == "01"  # NUBC "1" as the two-digit code ADT PV1-36 carries
    assert n.death_indicator is False and n.death_time is None
    assert n.facility == "9941339100"  # the serviceProvider Organization's NPI
    assert n.visit_number == VISIT
    assert MRN in n.identifiers
    assert n.patient_key == PatientIdentifier("http://example.org/fhir/pid", MRN.value, None)
    assert all(i.system and i.value for i in n.identifiers) and len(n.identifiers) == 4
    assert (n.family_name, n.given_name, n.birth_date, n.sex) == ("Halvorson124", "Elden718", date(2000, 10, 15), "M")
    assert n.location == "HOLY FAMILY HOSPITAL"
    # The IG links diagnoses from Condition.encounter, not Encounter.diagnosis.
    assert n.diagnoses == (Diagnosis("1234", "http://example.org/fhir/conditions"),)


def test_admit_sample() -> None:
    n = decode(sample("admit"))
    assert (n.kind, n.message_type) == (EncounterEventKind.ADMIT, "notification-admit")
    assert n.event_time == datetime(2020, 8, 17, 17, 15, 12, 11868, tzinfo=UTC)
    assert n.admit_time == ADMITTED
    # The admit sample's period has an end, but an in-progress encounter has not been discharged.
    assert n.discharge_time is None
    assert (n.class_system, n.class_code) == (ACT_CODE, "EMER")
    assert n.discharge_disposition is None
    assert MRN in n.identifiers and n.visit_number == VISIT and n.facility == "9941339100"


def test_transfer_sample() -> None:
    n = decode(sample("transfer"))
    assert (n.kind, n.message_type) == (EncounterEventKind.TRANSFER, "notification-transfer")
    assert n.event_time == datetime(2020, 8, 17, 18, 57, 26, 887078, tzinfo=UTC)
    assert n.admit_time == ADMITTED and n.discharge_time is None
    assert (n.class_system, n.class_code) == (ACT_CODE, "IMP")
    assert MRN in n.identifiers and n.visit_number == VISIT


def test_the_three_samples_describe_one_visit() -> None:
    keys = {
        (n.facility, n.visit_number, n.patient_key)
        for n in map(decode, map(sample, ("admit", "transfer", "discharge")))
    }
    assert len(keys) == 1


def test_date_only_and_offsetless_periods_use_the_default_zone() -> None:
    bundle = sample("discharge")
    resource(bundle, "Encounter")["period"] = {"start": "2018-10-21", "end": "2018-10-23T22:22:15Z"}
    n = decode(bundle)
    assert n.admit_time == datetime(2018, 10, 21, 4, 0, tzinfo=UTC)  # midnight in New York (EDT)
    assert n.discharge_time == datetime(2018, 10, 23, 22, 22, 15, tzinfo=UTC)


def test_v2_class_codes_are_mapped_like_adt() -> None:
    bundle = sample("discharge")
    resource(bundle, "Encounter")["class"] = {"system": "http://terminology.hl7.org/CodeSystem/v2-0004", "code": "I"}
    assert (decode(bundle).class_system, decode(bundle).class_code) == (ACT_CODE, "IMP")


def test_deceased_patient_and_expired_disposition_mean_death() -> None:
    bundle = sample("discharge")
    resource(bundle, "Patient")["deceasedDateTime"] = "2018-10-23T22:00:00-07:00"
    n = decode(bundle)
    assert n.death_indicator is True and n.death_time == datetime(2018, 10, 24, 5, 0, tzinfo=UTC)

    bundle = sample("discharge")
    disposition = resource(bundle, "Encounter")["hospitalization"]["dischargeDisposition"]
    disposition["coding"] = [{"system": "http://terminology.hl7.org/CodeSystem/discharge-disposition", "code": "exp"}]
    n = decode(bundle)
    assert n.death_indicator is True and n.death_time == n.discharge_time


def test_encounter_diagnosis_and_reason_codes_are_diagnoses() -> None:
    bundle = sample("discharge")
    encounter = resource(bundle, "Encounter")
    encounter["reasonCode"] = [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "F10.20"}]}]
    encounter["diagnosis"] = [{"condition": {"reference": "urn:uuid:4ac41715-fcbd-421c-8796-9b2c9706dd3f"}}]
    assert decode(bundle).diagnoses == (
        Diagnosis("1234", "http://example.org/fhir/conditions"),
        Diagnosis("F10.20", "http://hl7.org/fhir/sid/icd-10-cm"),
    )


def test_a_visit_number_typed_vn_wins() -> None:
    bundle = sample("discharge")
    resource(bundle, "Encounter")["identifier"].append(
        {
            "system": "http://hospital.example/visits",
            "value": "V0001",
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "VN"}]},
        }
    )
    assert decode(bundle).visit_number == "V0001"


def _drop_header(b: dict[str, Any]) -> None:
    del b["entry"][0]


def _unknown_event(b: dict[str, Any]) -> None:
    b["entry"][0]["resource"]["eventCoding"]["code"] = "notification-lab-report"


def _foreign_event_system(b: dict[str, Any]) -> None:
    b["entry"][0]["resource"]["eventCoding"] = {
        "system": "http://terminology.hl7.org/CodeSystem/v2-0003",
        "code": "A03",
    }


def _no_focus(b: dict[str, Any]) -> None:
    del b["entry"][0]["resource"]["focus"]


def _focus_elsewhere(b: dict[str, Any]) -> None:
    b["entry"][0]["resource"]["focus"] = [{"reference": "Encounter/not-in-this-bundle"}]


def _no_patient_identifiers(b: dict[str, Any]) -> None:
    del resource(b, "Patient")["identifier"]


def _bad_period(b: dict[str, Any]) -> None:
    resource(b, "Encounter")["period"]["start"] = "2018-10-21T21:22:15"  # a time needs an offset in FHIR


def _unknown_element(b: dict[str, Any]) -> None:
    resource(b, "Encounter")["dischargeDate"] = "2018-10-23"


def _unknown_resource(b: dict[str, Any]) -> None:
    b["entry"][3]["resource"]["resourceType"] = "Hospital"


def _not_a_message(b: dict[str, Any]) -> None:
    b["type"] = "collection"


def _no_bundle_id(b: dict[str, Any]) -> None:
    del b["id"]


def _discharge_before_admit(b: dict[str, Any]) -> None:
    resource(b, "Encounter")["period"]["end"] = "2018-10-20T10:00:00-07:00"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (_drop_header, "Bundle.entry[0].resource"),
        (_unknown_event, "Bundle.entry[0].resource.eventCoding"),
        (_foreign_event_system, "Bundle.entry[0].resource.eventCoding"),
        (_no_focus, "Bundle.entry[0].resource.focus"),
        (_focus_elsewhere, "Bundle.entry[0].resource.focus"),
        (_no_patient_identifiers, "Bundle.entry[2].resource.identifier"),
        (_bad_period, "Bundle.entry[1].resource.period.start"),
        (_unknown_element, "Bundle.entry[1].resource.dischargeDate"),
        (_unknown_resource, "Bundle.entry[3].resource"),
        (_not_a_message, "Bundle.type"),
        (_no_bundle_id, "Bundle.id"),
        (_discharge_before_admit, "Bundle.entry[1].resource.period.end"),
    ],
)
def test_unusable_bundles_name_the_element(mutate: Callable[[dict[str, Any]], None], field: str) -> None:
    bundle = copy.deepcopy(sample("discharge"))
    mutate(bundle)
    with pytest.raises(DecodeError) as err:
        decode(bundle)
    assert err.value.field == field, err.value.reason


@pytest.mark.parametrize(
    "payload",
    [
        b"MSH|^~\\&|ADT1|GOODHEALTH",
        b"\xff\xfe\x00garbage",
        b"[1, 2]",
        json.dumps({"resourceType": "Patient", "id": "p1"}).encode(),
        b"",
    ],
)
def test_not_a_bundle(payload: bytes) -> None:
    with pytest.raises(DecodeError) as err:
        decode(payload)
    assert err.value.field == "Bundle"
