"""The one CSV writer behind every CSV the service sends (roster exports, the change report, measure
tables and drill-downs): RFC 4180 quoting, CRLF line ends, and formula-injection neutralised.

Invariant: no text cell leaves here starting with a character a spreadsheet reads as the start of a
formula or a control (`=`, `+`, `-`, `@`, tab, CR, LF, NUL): such a cell is prefixed with a single quote
(OWASP CSV injection; ASVS 5 V1.2.10). That holds for every text value, identifiers and names from feeds
included, so a member id `-123` is written `'-123`. Values typed as numbers (int, float, Decimal) and as
dates are formatted here and written as they are: their text is a number or an ISO date, never a
formula. `None` is an empty cell.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from decimal import Decimal

FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\0")
NEUTRALISING_PREFIX = "'"


def neutralise(text: str) -> str:
    """The text as a spreadsheet shows it literally: quote-prefixed when it could start a formula."""
    return NEUTRALISING_PREFIX + text if text.startswith(FORMULA_START) else text


def cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):  # before int: a bool is an int
        return neutralise(str(value).lower())
    if isinstance(value, int | float | Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return neutralise(str(value))


def csv_lines(header: Iterable[str], rows: Iterable[Iterable[object]]) -> Iterator[str]:
    """CSV text one line at a time, for streaming to a file or an HTTP response; an empty header
    writes no header line (a later batch of the same file)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    header = [neutralise(h) for h in header]
    if header:
        writer.writerow(header)
        yield _take(buffer)
    for row in rows:
        writer.writerow([cell(v) for v in row])
        yield _take(buffer)


def csv_text(header: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    return "".join(csv_lines(header, rows))


def _take(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text
