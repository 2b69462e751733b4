"""Da Vinci ATR Group rosters in the shapes senders use, and our ATR export read back."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle

from app.roster.atr import read_atr
from app.roster.delimited import RosterFileError
from app.roster.exports import atr_bundle
from app.roster.records import MemberRecord, RowError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "rosters"
AS_OF, TODAY = date(2026, 11, 3), date(2026, 11, 3)


def read(raw: bytes) -> list[MemberRecord | RowError]:
    return list(read_atr(raw, as_of=AS_OF, today=TODAY))


def test_bundle_with_patient_coverage_and_providers() -> None:
    out = read((FIXTURES / "atr-bundle.json").read_bytes())
    first, second, third, missing = out
    assert isinstance(first, MemberRecord) and isinstance(second, MemberRecord) and isinstance(third, MemberRecord)
    assert (first.member_id, first.identifier_system, first.identifier_value) == (
        "MA100001",
        "urn:hl7v2:aa:GOODHEALTH",
        "MRN000101",
    )
    assert (first.family, first.given, first.sex, first.birth_date) == ("Ledner", "Dominique", "F", date(1965, 2, 11))
    assert first.pcp_npi == "1234567893" and first.practice == "Springfield ACO attribution"
    assert first.address == "1 Main St, Springfield, MA, 01101" and first.phone == "555-0101"
    assert first.enrollment_start == date(2026, 1, 1) and first.enrollment_end is None
    # PractitionerRole: the practitioner's NPI and the organization's name.
    assert (second.pcp_npi, second.practice) == ("1000000004", "Springfield Family Practice")
    # Organization as the attributed provider; changeType "dropped" ends the enrollment before the roster's date.
    assert third.pcp_npi is None and third.practice == "Springfield Family Practice"
    assert third.enrollment_end == date(2026, 11, 2) and third.terminated_by(AS_OF)
    assert isinstance(missing, RowError) and missing.field == "Group.member[3].entity"


def test_group_with_contained_resources() -> None:
    [rec] = read((FIXTURES / "atr-group-contained.json").read_bytes())
    assert isinstance(rec, MemberRecord) and rec.identifier_value == "MRN000101" and rec.pcp_npi == "1234567893"


def test_group_whose_references_are_not_in_the_file_reports_each_member() -> None:
    group = {
        "resourceType": "Group",
        "type": "person",
        "actual": True,
        "member": [{"entity": {"reference": "Patient/1"}}, {"entity": {"reference": "Patient/2"}, "inactive": False}],
    }
    out = read(json.dumps(group).encode())
    assert [(e.line, e.field) for e in out if isinstance(e, RowError)] == [
        (1, "Group.member[0].entity"),
        (2, "Group.member[1].entity"),
    ]


def test_inactive_member_is_ended_and_member_number_falls_back_to_the_patient() -> None:
    bundle = json.loads((FIXTURES / "atr-bundle.json").read_bytes())
    group = bundle["entry"][0]["resource"]
    # No coverage reference: the member number comes from the Patient's MB identifier.
    group["member"] = [{**group["member"][0], "inactive": True, "extension": []}]
    [rec] = read(json.dumps(bundle).encode())
    assert isinstance(rec, MemberRecord) and rec.member_id == "ACO-0001" and rec.enrollment_end == date(2026, 11, 2)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "empty"),
        (b'{"resourceType": "Bundle", "type": "collection", "entry": [', "not JSON"),
        (b'{"resourceType": "Patient"}', "Bundle or Group"),
        (b'{"resourceType": "Group", "type": "person"}', "invalid FHIR R4 Group: actual"),
        (b'{"resourceType": "Bundle", "type": "collection"}', "exactly one Group"),
    ],
)
def test_unusable_files_are_refused(raw: bytes, message: str) -> None:
    with pytest.raises(RosterFileError, match=message):
        read(raw)


def test_export_is_valid_fhir_and_reads_back() -> None:
    originals = [r for r in read((FIXTURES / "atr-bundle.json").read_bytes()) if isinstance(r, MemberRecord)][:2]

    class Row:
        def __init__(self, rec: MemberRecord) -> None:
            self.__dict__.update({f: getattr(rec, f) for f in rec.__slots__})  # type: ignore[attr-defined]
            self.sender = "ACO"

    bundle = atr_bundle([Row(r) for r in originals], sender="ACO", group_id="g1", as_of=AS_OF)
    Bundle.model_validate(bundle)
    back = [r for r in read(json.dumps(bundle).encode()) if isinstance(r, MemberRecord)]
    for before, after in zip(originals, back, strict=True):
        assert after.identifier_value == before.identifier_value and after.pcp_npi == before.pcp_npi
        assert (after.family, after.given, after.birth_date, after.sex) == (
            before.family,
            before.given,
            before.birth_date,
            before.sex,
        )
        assert after.medicaid_id == before.medicaid_id
