from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.consumers.hl7_time import Hl7TimeError, _parse_instant, _seconds_with_offset, parse_date, parse_instant

NY = ZoneInfo("America/New_York")


@given(
    moment=st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(2199, 12, 30)),
    offset_minutes=st.integers(min_value=-12 * 60, max_value=14 * 60).map(lambda m: m - m % 15),
)
def test_round_trip_with_offset(moment: datetime, offset_minutes: int) -> None:
    zone = timezone(timedelta(minutes=offset_minutes))
    local = moment.replace(microsecond=0, tzinfo=zone)
    sign = "+" if offset_minutes >= 0 else "-"
    hh, mm = divmod(abs(offset_minutes), 60)
    text = local.strftime("%Y%m%d%H%M%S") + f"{sign}{hh:02d}{mm:02d}"
    parsed = parse_instant(text, NY)
    assert parsed == local
    assert parsed.tzinfo == UTC


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026", datetime(2026, 1, 1, 5, tzinfo=UTC)),
        ("20260704", datetime(2026, 7, 4, 4, tzinfo=UTC)),
        ("202607041230", datetime(2026, 7, 4, 16, 30, tzinfo=UTC)),
        ("20260704123015.25-0700", datetime(2026, 7, 4, 19, 30, 15, 250000, tzinfo=UTC)),
        ("202601011200-0330", datetime(2026, 1, 1, 15, 30, tzinfo=UTC)),
        # python-hl7 alone reads -0015 as +00:15; found by the property test above.
        ("202601011200-0015", datetime(2026, 1, 1, 12, 15, tzinfo=UTC)),
    ],
)
def test_precisions(text: str, expected: datetime) -> None:
    assert parse_instant(text, NY) == expected


@pytest.mark.parametrize(
    "text", ["", "abc", "2026-07-04", "20260704T1230", "20261304", "2026070412301", "20260704+05", "202607041230+1560"]
)
def test_rejects_malformed(text: str) -> None:
    with pytest.raises(Hl7TimeError):
        parse_instant(text, NY)


def test_birth_date_is_a_calendar_date() -> None:
    assert parse_date("19700412").isoformat() == "1970-04-12"
    assert parse_date("197004120830-0500").isoformat() == "1970-04-12"
    with pytest.raises(Hl7TimeError):
        parse_date("1970")


@given(
    st.text(alphabet="0123456789", min_size=14, max_size=14),
    st.sampled_from("+-"),
    st.text(alphabet="0123456789", min_size=4, max_size=4),
)
def test_sliced_fast_path_agrees_with_the_general_path(digits: str, sign: str, offset: str) -> None:
    """Any 19-character `YYYYMMDDHHMMSS+ZZZZ`, valid or not, reads the same through both paths."""
    text = digits + sign + offset
    zone = ZoneInfo("America/New_York")

    def outcome(parse):  # type: ignore[no-untyped-def]
        try:
            return parse(text, zone)
        except Hl7TimeError:
            return "error"

    assert outcome(parse_instant) == outcome(_parse_instant)
    assert _seconds_with_offset(text) in (None, outcome(_parse_instant))


@given(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1)), st.integers(-14 * 60, 14 * 60))
def test_sliced_fast_path_agrees_on_valid_instants(moment: datetime, offset_minutes: int) -> None:
    sign = "-" if offset_minutes < 0 else "+"
    hh, mm = divmod(abs(offset_minutes), 60)
    text = moment.strftime("%Y%m%d%H%M%S") + f"{sign}{hh:02d}{mm:02d}"
    zone = ZoneInfo("America/New_York")
    assert _seconds_with_offset(text) == _parse_instant(text, zone)


@given(st.text(max_size=40) | st.from_regex(r"\A[0-9]{0,16}([.][0-9]{0,5})?([+-][0-9]{0,5})?\Z"))
def test_any_text_parses_to_an_aware_utc_instant_or_is_refused_as_hl7(text: str) -> None:
    """Whatever a feed sends in a TS field, the parser answers an aware UTC instant or Hl7TimeError,
    never another exception (which would not be dead-lettered with a field)."""
    try:
        parsed = parse_instant(text, NY)
    except Hl7TimeError:
        return
    assert parsed.tzinfo == UTC


@given(
    moment=st.datetimes(min_value=datetime(1901, 1, 2), max_value=datetime(2199, 12, 30)),
    offset_minutes=st.integers(min_value=-12 * 60, max_value=14 * 60).map(lambda m: m - m % 15),
    digits=st.sampled_from([4, 6, 8, 10, 12, 14]),
)
def test_a_shorter_precision_is_the_start_of_its_period(moment: datetime, offset_minutes: int, digits: int) -> None:
    """YYYY[MM[DD[HH[MM[SS]]]]]: a truncated timestamp is the first instant of the period it names,
    so it never lies after the full one, and the full one lies within that period."""
    zone = timezone(timedelta(minutes=offset_minutes))
    local = moment.replace(microsecond=0, tzinfo=zone)
    sign = "+" if offset_minutes >= 0 else "-"
    hh, mm = divmod(abs(offset_minutes), 60)
    full = local.strftime("%Y%m%d%H%M%S")
    suffix = f"{sign}{hh:02d}{mm:02d}"
    start = parse_instant(full[:digits] + suffix, NY)
    assert start <= parse_instant(full + suffix, NY)
    period = {4: timedelta(days=366), 6: timedelta(days=31), 8: timedelta(days=1), 10: timedelta(hours=1)}
    assert parse_instant(full + suffix, NY) - start < period.get(digits, timedelta(minutes=1))
