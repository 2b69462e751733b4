"""Streaming reader for delimited rosters (CSV, pipe): one record or one row error per data row.

Reads text lines (the caller opens the file as UTF-8 with BOM stripped and universal newlines
off, so CRLF and LF files read alike) and keeps only the member ids seen so far in memory.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from datetime import date

from app.roster.fields import is_valid_npi, parse_date, parse_flag, parse_sex
from app.roster.mapping import RosterMapping
from app.roster.records import MAX_LENGTHS, REQUIRED_FIELDS, MemberRecord, RowError

DATE_FIELDS = ("birth_date", "enrollment_start", "enrollment_end")


class RosterFileError(ValueError):
    """The file as a whole cannot be read (empty, no header, mapping does not fit, not UTF-8)."""


def read_delimited(lines: Iterable[str], mapping: RosterMapping, *, today: date) -> Iterator[MemberRecord | RowError]:
    reader = csv.reader(lines, delimiter=mapping.delimiter, strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise RosterFileError(f"header is not readable: {exc}") from None
    if header is None or not any(h.strip() for h in header):
        raise RosterFileError("file is empty: no header row")
    try:
        positions = mapping.column_indexes(header)
    except ValueError as exc:
        raise RosterFileError(str(exc)) from None
    width = len(header)
    first_seen: dict[str, int] = {}
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            # An unterminated quote, typically a truncated file: the rest cannot be split into rows.
            yield RowError(reader.line_num, None, f"unreadable row ({exc}); file may be truncated")
            return
        line = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        if len(row) != width:
            yield RowError(line, None, f"expected {width} fields, got {len(row)} (truncated or mis-delimited row)")
            continue
        result = _record(line, row, positions, mapping, today)
        if isinstance(result, MemberRecord):
            first = first_seen.setdefault(result.member_id, line)
            if first != line:
                yield RowError(line, "member_id", f"duplicate member_id (first at line {first})")
                continue
        yield result


def _record(
    line: int, row: list[str], positions: dict[str, int], mapping: RosterMapping, today: date
) -> MemberRecord | RowError:
    raw = dict(mapping.constants)
    for field, index in positions.items():
        raw[field] = row[index].strip()
    for field in REQUIRED_FIELDS:
        if not raw.get(field):
            return RowError(line, field, "required value is empty")
    for field, limit in MAX_LENGTHS.items():
        value = raw.get(field)
        if value is not None and len(value) > limit:
            return RowError(line, field, f"longer than {limit} characters")
    values: dict[str, object] = {k: (v or None) for k, v in raw.items()}
    try:
        for field in DATE_FIELDS:
            current = field
            values[field] = parse_date(raw.get(field, ""), mapping.date_formats)
        current = "bh_program"
        values["bh_program"] = parse_flag(raw.get("bh_program", ""), mapping.true_values, mapping.false_values)
        current = "sex"
        values["sex"] = parse_sex(raw.get("sex", ""), mapping.sex_codes)
    except ValueError as exc:
        return RowError(line, current, str(exc))
    return check_record(MemberRecord(line=line, **values), today)  # type: ignore[arg-type]


def check_record(record: MemberRecord, today: date) -> MemberRecord | RowError:
    """Rules every format shares, whatever layout the values came from."""
    if record.pcp_npi is not None and not is_valid_npi(record.pcp_npi):
        return RowError(record.line, "pcp_npi", "not a valid 10-digit NPI (check digit)")
    if record.birth_date is not None and record.birth_date > today:
        return RowError(record.line, "birth_date", "in the future")
    if record.enrollment_start and record.enrollment_end and record.enrollment_end < record.enrollment_start:
        return RowError(record.line, "enrollment_end", "before enrollment_start")
    return record
