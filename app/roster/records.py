"""One roster member as every input format yields it, and the fingerprint that detects a change."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date
from operator import attrgetter

# The `default` CSV layout: this header, in this order (docs/rosters.md).
DEFAULT_HEADER = (
    "member_id",
    "identifier_system",
    "identifier_value",
    "family",
    "given",
    "birth_date",
    "sex",
    "phone",
    "address",
    "pcp_npi",
    "practice",
    "program",
    "bh_program",
    "enrollment_start",
    "enrollment_end",
)
# Fields a mapping may add beyond the default layout.
OPTIONAL_FIELDS = ("medicaid_id", "risk_tier")
FIELDS = (*DEFAULT_HEADER, *OPTIONAL_FIELDS)
REQUIRED_FIELDS = ("member_id", "identifier_system", "identifier_value")

# Widths match the roster_members columns, so an over-long value is a row error, not a database one.
MAX_LENGTHS = {
    "member_id": 64,
    "identifier_system": 255,
    "identifier_value": 255,
    "medicaid_id": 64,
    "family": 200,
    "given": 200,
    "sex": 16,
    "phone": 64,
    "address": 500,
    "pcp_npi": 16,
    "practice": 200,
    "program": 32,
    "risk_tier": 32,
}


@dataclass(frozen=True, slots=True)
class MemberRecord:
    line: int  # physical line (CSV) or member index (ATR), for error reports
    member_id: str
    identifier_system: str
    identifier_value: str
    family: str | None = None
    given: str | None = None
    birth_date: date | None = None
    sex: str | None = None
    phone: str | None = None
    address: str | None = None
    pcp_npi: str | None = None
    practice: str | None = None
    program: str | None = None
    bh_program: bool = False
    enrollment_start: date | None = None
    enrollment_end: date | None = None
    medicaid_id: str | None = None
    risk_tier: str | None = None

    def values(self) -> tuple[object, ...]:
        """The field values in FIELDS order (everything but the line number)."""
        return _field_values(self)

    def content_hash(self) -> str:
        """Fingerprint of the field values: equal hashes mean nothing changed."""
        text = "\x1f".join("" if p is None else str(p) for p in _field_values(self))
        return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()

    def terminated_by(self, as_of: date) -> bool:
        """The roster itself ends this enrollment before the roster's effective date."""
        return self.enrollment_end is not None and self.enrollment_end < as_of


_field_values = attrgetter(*FIELDS)


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    field: str | None
    reason: str
