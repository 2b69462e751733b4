"""HL7 v2 DTM/DT values to instants. Offsets are honoured; values without one use the facility zone."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

import hl7

# DTM: YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]. python-hl7 is lenient (it reads
# "2026-11-20" as year 2026 at offset -11), so the shape is checked before it parses.
_DTM = re.compile(
    r"(?P<local>\d{4}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,4})?)?)?)?)?)?)"
    r"(?:(?P<sign>[+-])(?P<hh>\d{2})(?P<mm>\d{2}))?"
)


class Hl7TimeError(ValueError):
    pass


@lru_cache(maxsize=64)
def _offset(sign: str, hhmm: str) -> timezone:
    delta = timedelta(hours=int(hhmm[:2]), minutes=int(hhmm[2:]))
    return timezone(delta if sign == "+" else -delta)


def _seconds_with_offset(text: str) -> datetime | None:
    """The shape nearly every feed sends, `YYYYMMDDHHMMSS+ZZZZ`, read by slicing (a third of the
    general path's cost); None for anything else. tests/unit/test_hl7_time.py checks it against the
    general path."""
    if len(text) != 19 or text[14] not in "+-" or not text[:14].isdigit() or not text[15:].isdigit():
        return None
    if int(text[15:17]) > 14 or int(text[17:]) > 59:
        return None  # out-of-range offset: the general path reports it
    try:
        local = datetime(
            int(text[:4]), int(text[4:6]), int(text[6:8]), int(text[8:10]), int(text[10:12]), int(text[12:14])
        )
    except ValueError:
        return None  # the general path reports it
    return local.replace(tzinfo=_offset(text[14], text[15:])).astimezone(UTC)


def parse_instant(value: str, default_zone: ZoneInfo) -> datetime:
    """`YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]` -> aware UTC datetime."""
    text = value.strip()
    fast = _seconds_with_offset(text)
    if fast is not None:
        return fast
    return _parse_instant(text, default_zone)


def _parse_instant(text: str, default_zone: ZoneInfo) -> datetime:
    match = _DTM.fullmatch(text)
    if not match:
        raise Hl7TimeError(f"not an HL7 timestamp: {text[:32]!r}")
    try:
        parsed = hl7.parse_datetime(match["local"])
    except (ValueError, TypeError, IndexError) as exc:
        raise Hl7TimeError(f"not an HL7 timestamp: {text[:32]!r}") from exc
    if parsed is None:
        raise Hl7TimeError("empty timestamp")
    if match["sign"]:
        # The offset is applied here: python-hl7 loses the sign of "-00MM" offsets (int("-00") == 0).
        hours, minutes = int(match["hh"]), int(match["mm"])
        if hours > 14 or minutes > 59:
            raise Hl7TimeError(f"offset out of range: {text[:32]!r}")
        delta = timedelta(hours=hours, minutes=minutes)
        parsed = parsed.replace(tzinfo=timezone(delta if match["sign"] == "+" else -delta))
    else:
        parsed = parsed.replace(tzinfo=default_zone)
    return parsed.astimezone(UTC)


def parse_date(value: str) -> date:
    """Date part of a DT/DTM value (birth dates: no zone conversion, a birthday is a calendar date)."""
    text = value.strip()
    if len(text) < 8 or not text[:8].isdigit():
        raise Hl7TimeError(f"not an HL7 date: {text[:32]!r}")
    try:
        return date(int(text[0:4]), int(text[4:6]), int(text[6:8]))
    except ValueError as exc:
        raise Hl7TimeError(f"not an HL7 date: {text[:32]!r}") from exc
