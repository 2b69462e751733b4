"""CSV of the measures and of a drill-down list (RFC 4180, CRLF line ends, a header row).

Written by the shared writer (app/csv_writer.py), which quote-prefixes cells a spreadsheet would run as
a formula: team names and patient names come from feeds (OWASP CSV injection)."""

from __future__ import annotations

from collections.abc import Iterable

from app.csv_writer import csv_text
from app.measures.filters import MeasureFilter
from app.measures.results import MeasurePatient, MeasureResult

MEASURE_COLUMNS = (
    "key",
    "title",
    "numerator",
    "denominator",
    "rate",
    "target",
    "meets_target",
    "period_start",
    "period_end",
    "team",
    "role",
    "extras",
)
PATIENT_COLUMNS = ("patient_id", "family_name", "given_name", "birth_date", "task_ids", "event_ids")


def _write(header: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    return csv_text(header, rows)


def _extras(result: MeasureResult) -> str:
    """Scalar extras as `name=value; ...` (the by-role tables have their own chart and drill-down)."""
    return "; ".join(
        f"{k}={v}" for k, v in sorted(result.extras.items()) if isinstance(v, (int, float, str, bool)) or v is None
    )


def measures_csv(results: Iterable[MeasureResult], flt: MeasureFilter) -> str:
    return _write(
        MEASURE_COLUMNS,
        (
            (
                r.key,
                r.title,
                r.numerator,
                r.denominator,
                "" if r.rate is None else f"{r.rate:.4f}",
                "" if r.target is None else f"{r.target:.4f}",
                "" if r.meets_target is None else str(r.meets_target).lower(),
                flt.period_start.isoformat(),
                flt.period_end.isoformat(),
                flt.team,
                flt.role,
                _extras(r),
            )
            for r in results
        ),
    )


def patients_csv(patients: Iterable[MeasurePatient]) -> str:
    return _write(
        PATIENT_COLUMNS,
        (
            (
                p.patient_id,
                p.family_name,
                p.given_name,
                p.birth_date.isoformat() if p.birth_date else None,
                " ".join(str(t) for t in p.task_ids),
                " ".join(str(e) for e in p.event_ids),
            )
            for p in patients
        ),
    )
