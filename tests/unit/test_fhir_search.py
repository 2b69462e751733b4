"""FHIR search parameter parsing and the date-prefix range semantics on periods (R4 search.html)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from app.fhir.search import (
    DATE_PREFIXES,
    DateRange,
    SearchParamError,
    Token,
    handling_preference,
    matches,
    parse_count,
    parse_date_criterion,
    parse_date_range,
    parse_reference,
    parse_token,
    split_or,
)

NY = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- implicit ranges of date values ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("2015", utc(2015, 1, 1, 5), utc(2016, 1, 1, 5)),  # New York winter: UTC-5
        ("2015-02", utc(2015, 2, 1, 5), utc(2015, 3, 1, 5)),
        ("2016-02", utc(2016, 2, 1, 5), utc(2016, 3, 1, 5)),  # leap year: 29 days
        ("2015-02-08", utc(2015, 2, 8, 5), utc(2015, 2, 9, 5)),
        ("2015-07-04", utc(2015, 7, 4, 4), utc(2015, 7, 5, 4)),  # summer: UTC-4
        ("2026-03-08", utc(2026, 3, 8, 5), utc(2026, 3, 9, 4)),  # spring-forward day: 23 hours
        ("2026-11-01", utc(2026, 11, 1, 4), utc(2026, 11, 2, 5)),  # fall-back day: 25 hours
        ("2015-02-08T10:24", utc(2015, 2, 8, 15, 24), utc(2015, 2, 8, 15, 25)),
        ("2015-02-08T10:24:19Z", utc(2015, 2, 8, 10, 24, 19), utc(2015, 2, 8, 10, 24, 20)),
        ("2015-02-08T11:34:19+01:10", utc(2015, 2, 8, 10, 24, 19), utc(2015, 2, 8, 10, 24, 20)),
        ("2015-02-08T10:24:19-05:00", utc(2015, 2, 8, 15, 24, 19), utc(2015, 2, 8, 15, 24, 20)),
        ("2015-02-08T10:24:19.5Z", utc(2015, 2, 8, 10, 24, 19, 500000), utc(2015, 2, 8, 10, 24, 19, 600000)),
        ("2015-02-08T10:24:19.123Z", utc(2015, 2, 8, 10, 24, 19, 123000), utc(2015, 2, 8, 10, 24, 19, 124000)),
    ],
)
def test_date_value_range_follows_its_precision(text: str, low: datetime, high: datetime) -> None:
    assert parse_date_range(text, NY) == DateRange(low, high)


@pytest.mark.parametrize(
    "text", ["", "15", "2015-2-8", "2015-02-30", "2015-13", "2015-02-08T25:00", "2015-02-08T10", "today", "2015-02-08Z"]
)
def test_malformed_dates_are_refused_naming_the_parameter(text: str) -> None:
    with pytest.raises(SearchParamError) as err:
        parse_date_range(text, NY, "date")
    assert err.value.param == "date"


def test_prefixes() -> None:
    assert parse_date_criterion("2015", UTC).prefix == "eq"
    for prefix in DATE_PREFIXES:
        assert parse_date_criterion(f"{prefix}2015-02-08", UTC).prefix == prefix
    with pytest.raises(SearchParamError, match="unknown prefix"):
        parse_date_criterion("xx2015", UTC)


# --- prefix semantics on periods ------------------------------------------------------------------

DAY = "2015-02-08"  # searched in UTC: [02-08T00:00Z, 02-09T00:00Z)
D = utc(2015, 2, 8)
H = timedelta(hours=1)

# name -> (start, end) of the target period; None start = unknown, None end = ongoing
PERIODS: dict[str, tuple[datetime | None, datetime | None]] = {
    "inside": (D + 10 * H, D + 20 * H),
    "whole-day": (D, D + 24 * H - timedelta(microseconds=1)),
    "straddles-start": (D - 10 * H, D + 10 * H),
    "straddles-end": (D + 10 * H, D + 30 * H),
    "spans-day": (D - 10 * H, D + 30 * H),
    "before": (D - 30 * H, D - 10 * H),
    "after": (D + 30 * H, D + 40 * H),
    "ends-at-day-start": (D - 10 * H, D),
    "starts-at-next-day": (D + 24 * H, D + 30 * H),
    "ongoing-from-before": (D - 10 * H, None),
    "ongoing-from-inside": (D + 10 * H, None),
    "ongoing-from-after": (D + 30 * H, None),
    "unknown-start-ends-inside": (None, D + 10 * H),
    "unknown-start-ends-before": (None, D - 10 * H),
}

# prefix -> the periods it matches (all others must not match)
EXPECTED: dict[str, set[str]] = {
    "eq": {"inside", "whole-day"},
    "gt": {"straddles-end", "spans-day", "after", "starts-at-next-day", "ongoing-from-before", "ongoing-from-inside",
           "ongoing-from-after"},
    "lt": {"straddles-start", "spans-day", "before", "ends-at-day-start", "ongoing-from-before",
           "unknown-start-ends-inside", "unknown-start-ends-before"},
    "sa": {"after", "starts-at-next-day", "ongoing-from-after"},
    "eb": {"before", "unknown-start-ends-before"},
    "ap": {"inside", "whole-day", "straddles-start", "straddles-end", "spans-day", "ends-at-day-start",
           "ongoing-from-before", "ongoing-from-inside", "unknown-start-ends-inside"},
}  # fmt: skip
EXPECTED["ge"] = EXPECTED["gt"] | EXPECTED["eq"]
EXPECTED["le"] = EXPECTED["lt"] | EXPECTED["eq"]
EXPECTED["ne"] = set(PERIODS) - EXPECTED["eq"]


@pytest.mark.parametrize("prefix", DATE_PREFIXES)
def test_prefix_semantics_on_periods(prefix: str) -> None:
    criterion = parse_date_criterion(f"{prefix}{DAY}", UTC)
    matched = {name for name, (start, end) in PERIODS.items() if matches(criterion, start, end)}
    assert matched == EXPECTED[prefix]


def test_spec_ge_does_not_match_a_period_straddling_the_start_of_the_day() -> None:
    # Admitted the evening before, discharged the morning of the searched day: neither above the
    # search range nor contained in it, so `ge` (spec range semantics) leaves it out; `ap` finds it.
    start, end = PERIODS["straddles-start"]
    assert not matches(parse_date_criterion(f"ge{DAY}", UTC), start, end)
    assert matches(parse_date_criterion(f"ap{DAY}", UTC), start, end)


def test_an_encounter_without_a_period_never_matches() -> None:
    for prefix in DATE_PREFIXES:
        assert not matches(parse_date_criterion(f"{prefix}{DAY}", UTC), None, None)


def test_a_window_is_two_and_ed_criteria() -> None:
    # date=ge2015-02-08&date=le2015-02-10: periods touching the window's inner days
    ge = parse_date_criterion("ge2015-02-08", UTC)
    le = parse_date_criterion("le2015-02-10", UTC)
    in_window = (D + 30 * H, D + 40 * H)
    long_before = (D - 100 * H, D - 90 * H)
    assert matches(ge, *in_window) and matches(le, *in_window)
    assert not (matches(ge, *long_before) and matches(le, *long_before))


# --- token, reference, _count, comma lists, Prefer ------------------------------------------------


def test_tokens() -> None:
    assert parse_token("IMP", "class") == Token(None, "IMP")
    assert parse_token("http://sys|IMP", "class") == Token("http://sys", "IMP")
    assert parse_token("|IMP", "class") == Token("", "IMP")
    assert parse_token("http://sys|", "class") == Token("http://sys", None)
    for bad in ("", "|", "  "):
        with pytest.raises(SearchParamError):
            parse_token(bad, "class")


def test_references() -> None:
    ident = "3f2b8f9e-8a0c-4a33-9d55-1f4b2f9d7c10"
    assert parse_reference(ident, "Patient", "patient") == ident
    assert parse_reference(f"Patient/{ident}", "Patient", "patient") == ident
    assert parse_reference(f"https://fhir.example.org/fhir/Patient/{ident}", "Patient", "patient") == ident
    with pytest.raises(SearchParamError, match="must reference Patient"):
        parse_reference(f"Group/{ident}", "Patient", "patient")
    with pytest.raises(SearchParamError, match="not a FHIR id"):
        parse_reference("has space", "Patient", "patient")
    with pytest.raises(SearchParamError, match="versioned"):
        parse_reference(f"Patient/{ident}/_history/2", "Patient", "patient")


def test_count() -> None:
    assert parse_count("", 20, 100) == 20
    assert parse_count("0", 20, 100) == 0
    assert parse_count("7", 20, 100) == 7
    assert parse_count("1000", 20, 100) == 100  # the server may return fewer than asked
    for bad in ("-1", "abc", "1.5", "9" * 20):
        with pytest.raises(SearchParamError):
            parse_count(bad, 20, 100)


def test_comma_separated_values_are_alternatives() -> None:
    assert split_or("a,b") == ["a", "b"]
    assert split_or(r"a\,b,c") == ["a,b", "c"]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "lenient"),
        ("", "lenient"),
        ("handling=lenient", "lenient"),
        ("handling=strict", "strict"),
        ("return=minimal, handling=strict", "strict"),
        ('Handling="strict"', "strict"),
    ],
)
def test_prefer_handling(header: str | None, expected: str) -> None:
    assert handling_preference(header) == expected
