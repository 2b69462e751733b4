"""Reading one roster value: dates, flags, sex codes, NPIs. Each returns the value or raises ValueError
with a reason fit for a row-error report (never the value itself: it is patient data)."""

from __future__ import annotations

from datetime import date, datetime
from functools import lru_cache

from app.roster.mapping import ISO_DATE

SEX_CODES = frozenset({"M", "F", "O", "U"})
NPI_PREFIX_SUM = 24  # Luhn sum of the "80840" prefix the NPI check digit is computed over


def parse_date(text: str, formats: list[str]) -> date | None:
    if not text:
        return None
    for fmt in formats:
        try:
            return date.fromisoformat(text) if fmt == ISO_DATE else datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise ValueError(f"not a date in the format {' or '.join(formats)}")


def parse_flag(text: str, true_values: list[str], false_values: list[str]) -> bool:
    upper = text.upper()
    if upper in true_values:
        return True
    if upper in false_values:
        return False
    raise ValueError(f"expected one of {', '.join(v for v in (*true_values, *false_values) if v)}")


def parse_sex(text: str, codes: dict[str, str]) -> str | None:
    if not text:
        return None
    code = codes.get(text.upper())
    if code not in SEX_CODES:
        raise ValueError(f"unknown sex code (known: {', '.join(sorted(codes))})")
    return code


@lru_cache(maxsize=65_536)  # a roster names a few thousand PCPs, a million times
def is_valid_npi(npi: str) -> bool:
    """10 digits whose last is the Luhn check digit over "80840" + the first nine (CMS NPI standard)."""
    if len(npi) != 10 or not npi.isdigit():
        return False
    total = NPI_PREFIX_SUM
    for i, ch in enumerate(reversed(npi[:9])):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return (10 - total % 10) % 10 == int(npi[9])


def npi_check_digit(first_nine: str) -> str:
    """The digit that makes `first_nine` + it a valid NPI (used by tests and the benchmark generator)."""
    return next(str(d) for d in range(10) if is_valid_npi(first_nine + str(d)))
