"""HL7 v2 decoding against the real sample set, with the reference converter's output as oracle."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from app.consumers.hl7v2_decode import DecodeOptions, Hl7DecodeError, decode_adt, decode_text
from tests.hl7_builder import adt

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "samples"
NY = ZoneInfo("America/New_York")
OPTIONS = DecodeOptions(default_zone=NY)


def sample(name: str) -> str:
    return (SAMPLES / "hl7v2" / name).read_text(encoding="utf-8")


def expected(name: str, resource_type: str) -> dict:
    bundle = json.loads((SAMPLES / "hl7v2-expected-fhir" / name).read_text(encoding="utf-8"))
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type)


def test_a03_sample_header_and_patient() -> None:
    msg = decode_adt(sample("ADT-A03-01.hl7"), OPTIONS)
    assert msg.message_id == "MSG00001"
    assert msg.facility == "GHHSFacility"
    assert (msg.message_type, msg.kind) == ("ADT^A03", "discharge")
    assert msg.message_identity == "hl7v2|GHHSFacility|MSG00001"
    assert msg.idempotency_key.startswith("hl7v2|GHHSFacility|MSG00001|")
    assert [(i.system, i.value, i.type_code) for i in msg.identifiers] == [
        ("urn:hl7v2:aa:test1", "PATID1234", "MR"),
        ("urn:hl7v2:aa:USSSA", "123456789", "SS"),
    ]
    patient = expected("ADT-A03-01-expected.json", "Patient")
    assert msg.birth_date == date.fromisoformat(patient["birthDate"])
    assert msg.sex == "M" and patient["gender"] == "male"
    assert (msg.family_name, msg.given_name) == ("EVERYMAN", "ADAM")
    # PID-30 = Y: the sample patient is deceased; PID-29 carries the time.
    assert msg.death_indicator is True
    assert msg.death_time == datetime.fromisoformat(patient["deceasedDateTime"]).astimezone(UTC)


def test_a03_sample_visit_matches_reference_converter_instants() -> None:
    msg = decode_adt(sample("ADT-A03-01.hl7"), OPTIONS)
    encounter = expected("ADT-A03-01-expected.json", "Encounter")
    # The converter renders in its own offset (+05:30); the instants must agree, not the strings.
    assert msg.admit_time == datetime.fromisoformat(encounter["period"]["start"])
    assert msg.discharge_time == datetime.fromisoformat(encounter["period"]["end"])
    assert msg.discharge_time == datetime(2015, 2, 9, 10, 24, 19, tzinfo=UTC)
    assert msg.patient_class == "P"
    assert msg.visit_number == encounter["identifier"][0]["value"] == "40007716"
    assert msg.hospital_service == encounter["serviceType"]["coding"][0]["code"] == "SUR"
    assert msg.discharge_disposition == "Admitted as Inpatient"
    # EVN-2 20290801070624+0115
    assert msg.event_time == datetime(2029, 8, 1, 5, 51, 24, tzinfo=UTC)
    assert [(d.code, d.system) for d in msg.diagnoses] == [("422504002", "SCT")]
    assert (msg.class_code, msg.patient_class) == ("PRENC", "P")


@pytest.mark.parametrize("path", sorted((SAMPLES / "hl7v2").glob("*.hl7")), ids=lambda p: p.stem)
def test_every_sample_decodes_with_its_trigger(path: Path) -> None:
    msg = decode_adt(path.read_text(encoding="utf-8"), OPTIONS)
    assert msg.message_type == "ADT^" + path.stem.split("-")[1]
    assert msg.message_id and msg.identifiers


def test_assigning_authority_map_names_the_system() -> None:
    msg = decode_adt(
        adt(authority="GOODHEALTH"),
        DecodeOptions(default_zone=NY, authority_systems={"GOODHEALTH": "http://goodhealth.example.org/mrn"}),
    )
    assert msg.identifiers[0].system == "http://goodhealth.example.org/mrn"


def test_missing_offset_uses_facility_zone_and_dst() -> None:
    # 2026-03-08 is the US spring-forward day: 01:30 EST (-05:00) and 03:30 EDT (-04:00).
    before = decode_adt(adt(event_time="202603080130"), OPTIONS)
    after = decode_adt(adt(event_time="202603080330"), OPTIONS)
    assert before.event_time == datetime(2026, 3, 8, 6, 30, tzinfo=UTC)
    assert after.event_time == datetime(2026, 3, 8, 7, 30, tzinfo=UTC)


def test_lf_and_mllp_framing_are_accepted() -> None:
    text = "\x0b" + adt().replace("\r", "\n") + "\x1c\r"
    assert decode_adt(text, OPTIONS).message_type == "ADT^A03"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("", "MSH"),
        ("hello world", "MSH"),
        ("PID|1||123", "MSH"),
        ("MSH|", "MSH"),
        (adt().replace("ADT^A03^ADT_A03", "ORU^R01^ORU_R01"), "MSH-9"),
        (adt(control_id=""), "MSH-10"),
        (adt(message_time="notadate"), "MSH-7"),
        (adt(mrn="", authority=""), "PID-3"),
        (adt(birth_date="19701399"), "PID-7"),
        (adt(discharge_time="2026-11-20"), "PV1-45"),
        ("\r".join(line for line in adt().split("\r") if not line.startswith("PID")), "PID"),
    ],
)
def test_bad_messages_name_the_field(text: str, field: str) -> None:
    with pytest.raises(Hl7DecodeError) as err:
        decode_adt(text, OPTIONS)
    assert err.value.field == field
    assert err.value.reason


def test_encoding_utf8_latin1_and_binary() -> None:
    assert decode_text("MSH|^~\\&|Zoë".encode()) == "MSH|^~\\&|Zoë"
    latin = adt().replace("|2.5.1", "|2.5.1|||||||8859/1", 1).replace("JANE", "JOSÉ").encode("latin-1")
    assert "JOSÉ" in decode_text(latin)
    with pytest.raises(Hl7DecodeError) as err:
        decode_text(b"\xff\xfe\x00garbage")
    assert err.value.field == "MSH-18"


def test_identifier_without_assigning_authority_is_scoped_to_the_sending_facility() -> None:
    text = adt().replace("MRN12345^^^GOODHEALTH^MR", "MRN12345")
    msg = decode_adt(text, OPTIONS)
    assert msg.identifiers[0].system == "urn:hl7v2:aa:GOODHEALTH"
    other = decode_adt(text.replace("|GOODHEALTH|", "|OTHERHOSP|", 1), OPTIONS)
    assert other.identifiers[0].system == "urn:hl7v2:aa:OTHERHOSP"


def test_a_parser_crash_is_a_decode_error_for_every_entry_point() -> None:
    from functools import partial

    from app.consumers.hl7v2_decode import decode_hl7v2
    from app.consumers.notice_handler import NoticeHandler
    from app.encounters.notice import DecodeError

    def explode(payload: bytes) -> None:
        raise AssertionError("library internals")

    handler = NoticeHandler(
        source="hl7v2",
        decode=explode,
        sessions=None,
        engine=None,
        sensitivity=None,  # type: ignore[arg-type]
        max_bytes=1024,
        max_skew=timedelta(minutes=15),
    )
    with pytest.raises(DecodeError) as err:
        handler.decode(b"MSH&^~\\&|X")
    assert err.value.field == "MSH" and "AssertionError" in err.value.reason
    real = NoticeHandler(
        source="hl7v2",
        decode=partial(decode_hl7v2, options=OPTIONS),
        sessions=None,  # type: ignore[arg-type]
        engine=None,
        sensitivity=None,
        max_bytes=1024,
        max_skew=timedelta(minutes=15),
    )  # type: ignore[arg-type]
    with pytest.raises(DecodeError):
        real.decode(b"MSH&^~\\&|ADT1|GOODHEALTH")


def test_bare_code_diagnosis_from_older_feeds_is_kept() -> None:
    # DG1-2 coding method (deprecated) names the system; DG1-3 carries the code alone.
    text = adt() + "DG1|1|I10|F10.20|ALCOHOL DEPENDENCE\r"
    msg = decode_adt(text, OPTIONS)
    assert [(d.code, d.system) for d in msg.diagnoses] == [("F10.20", "I10")]
