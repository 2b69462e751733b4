"""Dead-letter payloads: Part 2 when an encounter in them classifies as Part 2 or a substance-use
instrument is coded; undecodable ones count as Part 2 (fail closed)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from app.api.part2_payloads import payload_is_part2
from app.consumers.hl7v2_decode import DecodeOptions, decode_adt
from app.encounters.sensitivity import SensitivityPolicy
from tests.hl7_builder import adt

POLICY = SensitivityPolicy(
    bh_services=frozenset({"PSY"}),
    bh_units=frozenset({"PSY"}),
    bh_icd10_range=("F01", "F99"),
    part2_icd10_range=("F10", "F19"),
    part2_services=frozenset({"SUD"}),
    part2_units=frozenset({"SUD"}),
)
AUDIT_C = frozenset({"72109-2", "75626-2"})


def decode(payload: bytes) -> object:
    return decode_adt(payload.decode(), DecodeOptions(default_zone=ZoneInfo("UTC")))


def test_an_adt_with_a_substance_use_diagnosis_is_part2() -> None:
    assert payload_is_part2(decode, adt(diagnoses=(("F10.20", "I10"),)).encode(), POLICY, AUDIT_C)
    assert not payload_is_part2(decode, adt(diagnoses=(("F32.9", "I10"),)).encode(), POLICY, AUDIT_C)
    assert not payload_is_part2(decode, adt().encode(), POLICY, AUDIT_C)


def test_undecodable_or_unknown_source_fails_closed() -> None:
    assert payload_is_part2(decode, b"\x00\xffnot hl7", POLICY, AUDIT_C)
    assert payload_is_part2(None, adt().encode(), POLICY, AUDIT_C)
