"""FHIR R4 search parameter parsing (pure: no I/O, no SQL).

Implements the parts of the R4 search framework (hl7.org/fhir/R4/search.html) the FHIR endpoints use:

- **date** values with a prefix (`eq ne gt lt ge le sa eb ap`) and an implicit range from their
  precision: `2015` is all of 2015, `2015-02-08` is that whole day, `2015-02-08T10:24` that minute.
  A value without a zone is read on the facility clock (the spec says: assume the server's zone).
- **Period targets** (Encounter.date searches Encounter.period): the target is the closed range
  [start, end]; a missing start is unknown (-infinity), a missing end means ongoing (+infinity);
  a resource without either never matches. Prefix semantics are the spec's range rules:

  | prefix | matches when |
  |---|---|
  | eq | the search range fully contains the period |
  | ne | the search range does not fully contain the period |
  | gt | the range above the search value overlaps the period (end >= search end) |
  | lt | the range below the search value overlaps the period (start < search start) |
  | ge | gt, or eq |
  | le | lt, or eq |
  | sa | the period starts after the search range (start >= search end) |
  | eb | the period ends before the search range (end < search start) |
  | ap | the search range overlaps the period (carecoord applies no extra approximation margin) |

  Note what the spec's `ge` does *not* match: a period that straddles the start of the search
  range without reaching past its end (admitted the day before, discharged the morning of the
  searched day). `ap` ("overlaps") is the prefix for "was this visit on that day".
- **token** values: `code`, `system|code`, `|code` (no system) and `system|` (any code in system).
- **reference** values: `id`, `Type/id` or an absolute URL ending in `Type/id`.
- `_count`, and the `Prefer: handling=strict|lenient` header.

The date criteria are expressed as a small predicate tree (`Cmp`, `All`, `AnyOf`) so that SQL
(app/fhir/routes.py) and the Python evaluator here (`matches`, used by unit tests) share one definition.
"""

from __future__ import annotations

import re
from calendar import monthrange
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Literal

DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")

_DATE_VALUE = re.compile(
    r"(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?P<fraction>\.\d{1,9})?)?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})?)?)?)?"
)
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


class SearchParamError(ValueError):
    """A search parameter value the server cannot process: answer 400 naming the parameter."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


# --- date -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DateRange:
    """The implicit range of a search value: [low, high), both aware UTC."""

    low: datetime
    high: datetime


@dataclass(frozen=True, slots=True)
class DateCriterion:
    prefix: str
    range: DateRange


def parse_date_range(text: str, zone: tzinfo, param: str = "date") -> DateRange:
    match = _DATE_VALUE.fullmatch(text.strip())
    if not match:
        raise SearchParamError(param, f"not a FHIR date/dateTime: {text[:40]!r}")
    g = match.groupdict()
    tz: tzinfo = zone
    if g["zone"] == "Z":
        tz = UTC
    elif g["zone"]:
        sign = 1 if g["zone"][0] == "+" else -1
        hours, minutes = int(g["zone"][1:3]), int(g["zone"][4:6])
        if hours > 14 or minutes > 59:
            raise SearchParamError(param, f"zone offset out of range: {g['zone']}")
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        year = int(g["year"])
        month = int(g["month"] or 1)
        day = int(g["day"] or 1)
        hour = int(g["hour"] or 0)
        minute = int(g["minute"] or 0)
        second = int(g["second"] or 0)
        fraction = Decimal(g["fraction"]) if g["fraction"] else Decimal(0)
        start = datetime(year, month, day, hour, minute, second, int(fraction * 1_000_000), tzinfo=tz)
        if g["fraction"]:
            end = start + timedelta(microseconds=max(1, int(Decimal(10) ** (7 - len(g["fraction"])))))
        elif g["second"] is not None:
            end = start + timedelta(seconds=1)
        elif g["minute"] is not None:
            end = start + timedelta(minutes=1)
        elif g["day"] is not None:
            end = _add_local(start, days=1)
        elif g["month"] is not None:
            end = _add_local(start, days=monthrange(year, month)[1])
        else:
            end = start.replace(year=year + 1)
        return DateRange(_utc(start), _utc(end))
    except (ValueError, OverflowError):
        raise SearchParamError(param, f"not a valid date: {text[:40]!r}") from None


def _add_local(start: datetime, days: int) -> datetime:
    """Calendar-day arithmetic on the wall clock (a DST day is 23 or 25 hours long)."""
    naive = start.replace(tzinfo=None) + timedelta(days=days)
    return naive.replace(tzinfo=start.tzinfo)


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def parse_date_criterion(text: str, zone: tzinfo, param: str = "date") -> DateCriterion:
    value = text.strip()
    prefix = "eq"
    if len(value) >= 2 and value[:2].isalpha():
        prefix, value = value[:2], value[2:]
        if prefix not in DATE_PREFIXES:
            raise SearchParamError(param, f"unknown prefix {prefix!r}; use one of {', '.join(DATE_PREFIXES)}")
    return DateCriterion(prefix, parse_date_range(value, zone, param))


# A predicate over a period: Cmp compares one bound of the period with a datetime; `if_missing` is
# its value when that bound is absent (start absent = -infinity, end absent = +infinity).


@dataclass(frozen=True, slots=True)
class Cmp:
    field: Literal["start", "end"]
    op: Literal["<", ">="]
    value: datetime
    if_missing: bool


@dataclass(frozen=True, slots=True)
class All:
    parts: tuple[Predicate, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    parts: tuple[Predicate, ...]


Predicate = Cmp | All | AnyOf


def period_predicate(criterion: DateCriterion) -> Predicate:
    """The criterion as a predicate on (start, end); the caller also requires start or end present."""
    low, high = criterion.range.low, criterion.range.high
    contained = All((Cmp("start", ">=", low, False), Cmp("end", "<", high, False)))
    above = Cmp("end", ">=", high, True)
    below = Cmp("start", "<", low, True)
    match criterion.prefix:
        case "eq":
            return contained
        case "ne":
            return AnyOf((Cmp("start", "<", low, True), Cmp("end", ">=", high, True)))
        case "gt":
            return above
        case "lt":
            return below
        case "ge":
            return AnyOf((above, contained))
        case "le":
            return AnyOf((below, contained))
        case "sa":
            return Cmp("start", ">=", high, False)
        case "eb":
            return Cmp("end", "<", low, False)
        case "ap":
            return All((Cmp("start", "<", high, True), Cmp("end", ">=", low, True)))
    raise SearchParamError("date", f"unknown prefix {criterion.prefix!r}")  # pragma: no cover


def evaluate(predicate: Predicate, start: datetime | None, end: datetime | None) -> bool:
    if isinstance(predicate, Cmp):
        bound = start if predicate.field == "start" else end
        if bound is None:
            return predicate.if_missing
        return bound < predicate.value if predicate.op == "<" else bound >= predicate.value
    if isinstance(predicate, All):
        return all(evaluate(p, start, end) for p in predicate.parts)
    return any(evaluate(p, start, end) for p in predicate.parts)


def matches(criterion: DateCriterion, start: datetime | None, end: datetime | None) -> bool:
    """Does a period [start, end] match the criterion (the reference semantics SQL must agree with)."""
    if start is None and end is None:
        return False
    return evaluate(period_predicate(criterion), start, end)


# --- token, reference, _count, Prefer -------------------------------------------------------------

ANY_SYSTEM = None  # `code` alone: any system
NO_SYSTEM = ""  # `|code`: the coding has no system


@dataclass(frozen=True, slots=True)
class Token:
    system: str | None  # None: any system; "": no system
    code: str | None  # None: any code in `system`


def parse_token(text: str, param: str) -> Token:
    value = text.strip()
    if not value:
        raise SearchParamError(param, "empty value")
    if "|" not in value:
        return Token(ANY_SYSTEM, value)
    system, _, code = value.partition("|")
    if not system and not code:
        raise SearchParamError(param, "empty value")
    return Token(system, code or None)


def parse_reference(text: str, resource_type: str, param: str) -> str:
    """`id`, `Type/id` or `http://.../Type/id` -> id. A reference to another type is an error."""
    value = text.strip().rstrip("/")
    if not value:
        raise SearchParamError(param, "empty value")
    if "/_history/" in value:
        raise SearchParamError(param, "versioned references are not supported")
    parts = value.split("/")
    if len(parts) >= 2:
        kind, ident = parts[-2], parts[-1]
        if kind != resource_type:
            raise SearchParamError(param, f"must reference {resource_type}, not {kind[:40]}")
    else:
        ident = value
    if not _FHIR_ID.fullmatch(ident):
        raise SearchParamError(param, f"not a FHIR id: {ident[:40]!r}")
    return ident


def parse_count(text: str, default: int, maximum: int) -> int:
    """`_count`: 0 asks for the total only; above `maximum` the server returns `maximum` (spec allows)."""
    value = text.strip()
    if not value:
        return default
    if not value.isdigit() or len(value) > 9:
        raise SearchParamError("_count", f"must be a non-negative integer, got {value[:20]!r}")
    return min(int(value), maximum)


def split_or(text: str) -> list[str]:
    """Comma-separated values are OR-ed (a `\\,` is a literal comma)."""
    parts = re.split(r"(?<!\\),", text)
    return [p.replace("\\,", ",") for p in parts]


def handling_preference(prefer_header: str | None) -> Literal["strict", "lenient"]:
    """`Prefer: handling=strict` asks for errors on unknown parameters; lenient (ignore) is the default."""
    for pref in (prefer_header or "").split(","):
        name, _, value = pref.strip().partition("=")
        if name.strip().lower() == "handling" and value.strip().strip('"').lower() == "strict":
            return "strict"
    return "lenient"


IGNORED_QUIETLY = ("_format", "_pretty")  # json is the only format; both are accepted and have no effect


def applicable_params(
    items: Iterable[tuple[str, str]], accepted: Collection[str], ignored: list[str], *, strict: bool
) -> Iterator[tuple[str, str]]:
    """(name, value) of each accepted, non-empty parameter, in order: the R4 search framework's handling
    shared by every search. An unknown parameter is a 400 under `Prefer: handling=strict`, else named in
    `ignored` (the Bundle's outcome entry); a modifier on a known one is always a 400 (none are
    supported); NUL characters are refused (PostgreSQL text cannot hold them)."""
    for raw_name, value in items:
        if "\x00" in raw_name or "\x00" in value:
            raise SearchParamError(raw_name[:64].replace("\x00", ""), "NUL characters are not allowed")
        name, _, modifier = raw_name.partition(":")
        if name in accepted:
            if modifier:
                raise SearchParamError(raw_name, f"modifier :{modifier} is not supported")
        elif name in IGNORED_QUIETLY:
            continue
        else:
            if strict:
                raise SearchParamError(raw_name, "unknown search parameter (Prefer: handling=strict)")
            ignored.append(raw_name)
            continue
        if value.strip():  # an empty parameter is ignored
            yield name, value
