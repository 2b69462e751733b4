"""Delimited roster reading and mappings: every bad row reported with its line and reason."""

from __future__ import annotations

from datetime import date

import pytest

from app.roster.delimited import RosterFileError, read_delimited
from app.roster.fields import is_valid_npi, npi_check_digit
from app.roster.mapping import DEFAULT_MAPPING, MappingError, load_mappings
from app.roster.reconcile import categories, judge_file
from app.roster.records import MemberRecord, RowError
from tests.roster_builder import csv_text, member

TODAY = date(2026, 11, 24)


def read(text: str, mapping=DEFAULT_MAPPING) -> list[MemberRecord | RowError]:  # type: ignore[no-untyped-def]
    return list(read_delimited(text.splitlines(keepends=True), mapping, today=TODAY))


def test_default_layout_reads_every_field() -> None:
    [rec] = read(csv_text([member(1, bh_program="Y", enrollment_end="2026-12-31")]))
    assert isinstance(rec, MemberRecord)
    assert (rec.line, rec.member_id, rec.identifier_value, rec.birth_date) == (
        2,
        "M000001",
        "MRN000001",
        date(1970, 4, 12),
    )
    assert rec.bh_program is True and rec.enrollment_end == date(2026, 12, 31) and rec.sex == "F"
    assert rec.address == "1 Main St, Springfield, MA, 01101"


@pytest.mark.parametrize(
    ("override", "field", "reason"),
    [
        ({"birth_date": "1970-13-01"}, "birth_date", "not a date"),
        ({"birth_date": "04/12/1970"}, "birth_date", "not a date"),
        ({"birth_date": "2099-01-01"}, "birth_date", "in the future"),
        ({"enrollment_start": "2026-05-01", "enrollment_end": "2026-04-01"}, "enrollment_end", "before"),
        ({"bh_program": "maybe"}, "bh_program", "expected one of"),
        ({"sex": "X"}, "sex", "unknown sex code"),
        ({"pcp_npi": "1234567890"}, "pcp_npi", "check digit"),
        ({"member_id": ""}, "member_id", "required"),
        ({"identifier_value": ""}, "identifier_value", "required"),
        ({"family": "x" * 201}, "family", "longer than 200"),
    ],
)
def test_bad_values_are_row_errors_naming_the_field(override: dict[str, str], field: str, reason: str) -> None:
    [err] = read(csv_text([member(1, **override)]))
    assert isinstance(err, RowError) and err.line == 2 and err.field == field and reason in err.reason


def test_duplicate_member_rows_keep_the_first() -> None:
    out = read(csv_text([member(1), member(2), member(1, family="Other")]))
    assert [type(r).__name__ for r in out] == ["MemberRecord", "MemberRecord", "RowError"]
    assert out[2].line == 4 and "first at line 2" in out[2].reason  # type: ignore[union-attr]


def test_truncated_rows_and_unterminated_quotes() -> None:
    text = csv_text([member(1), member(2)])
    cut = text[: text.rindex("Given2")]
    out = read(cut)
    assert isinstance(out[1], RowError) and "expected 15 fields, got 5" in out[1].reason
    quoted = text + 'M9,s,v,"unterminated\n'
    assert "truncated" in read(quoted)[-1].reason  # type: ignore[union-attr]


def test_blank_lines_are_not_members() -> None:
    text = csv_text([member(1)]) + "\n\n" + csv_text([member(2)]).split("\n", 1)[1]
    assert [r.member_id for r in read(text) if isinstance(r, MemberRecord)] == ["M000001", "M000002"]


def test_empty_file_and_missing_columns_refuse_the_file() -> None:
    with pytest.raises(RosterFileError, match="empty"):
        read("")
    with pytest.raises(RosterFileError, match="pcp_npi"):
        read("member_id,identifier_system,identifier_value\nM1,s,v\n")


def test_configured_mapping_renames_columns_sets_constants_and_formats() -> None:
    mappings = load_mappings(
        {
            "acme": {
                "delimiter": "|",
                "columns": {
                    "member_id": "MEMBER NO",
                    "identifier_value": "MRN",
                    "birth_date": "DOB",
                    "bh_program": "BH",
                    "risk_tier": "TIER",
                    "medicaid_id": "MEDICAID",
                },
                "constants": {"identifier_system": "urn:hl7v2:aa:GOODHEALTH", "program": "CP"},
                "date_formats": ["%m/%d/%Y"],
            }
        }
    )
    text = "MEMBER NO|MRN|DOB|BH|TIER|MEDICAID|IGNORED\r\nA1|123|04/12/1970|Y|high|MA0001|x\r\n"
    [rec] = read(text, mappings["acme"])
    assert isinstance(rec, MemberRecord)
    assert (rec.member_id, rec.identifier_system, rec.program, rec.risk_tier) == (
        "A1",
        "urn:hl7v2:aa:GOODHEALTH",
        "CP",
        "high",
    )
    assert rec.birth_date == date(1970, 4, 12) and rec.bh_program and rec.medicaid_id == "MA0001"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"columns": {"member_number": "X"}}, "unknown roster field"),
        ({"columns": {"member_id": "ID"}}, "no column or constant for identifier_system"),
        ({"delimiter": "||"}, "delimiter"),
    ],
)
def test_mapping_errors_name_the_mapping_and_key(spec: dict[str, object], message: str) -> None:
    with pytest.raises(MappingError, match=message) as info:
        load_mappings({"acme": spec})
    assert "acme" in str(info.value)


def test_npi_check_digit() -> None:
    assert is_valid_npi("1234567893") and not is_valid_npi("1234567890") and not is_valid_npi("12345")
    assert npi_check_digit("123456789") == "3"


def test_content_hash_ignores_the_line_and_sees_every_field() -> None:
    a = MemberRecord(line=2, member_id="1", identifier_system="s", identifier_value="v")
    assert (
        a.content_hash()
        == MemberRecord(line=9, member_id="1", identifier_system="s", identifier_value="v").content_hash()
    )
    assert (
        a.content_hash()
        != MemberRecord(line=2, member_id="1", identifier_system="s", identifier_value="v", pcp_npi="x").content_hash()
    )


def test_file_verdicts() -> None:
    assert judge_file(100, 5, 0.05).accepted
    assert not judge_file(100, 6, 0.05).accepted
    assert judge_file(0, 0, 0.05).reason == "no member rows"
    assert judge_file(3, 3, 1.0).reason == "no valid member rows"


def test_change_categories() -> None:
    assert categories(["practice", "family"]) == ["reassignment", "demographics"]
    assert categories([]) == []
