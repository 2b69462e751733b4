"""Builds roster files for tests: the `default` CSV layout with valid NPIs, and ATR Group Bundles."""

from __future__ import annotations

import csv
import io
from typing import Any

from app.roster.fields import npi_check_digit
from app.roster.records import DEFAULT_HEADER

MRN_SYSTEM = "urn:hl7v2:aa:GOODHEALTH"  # what ADT's PID-3.4 GOODHEALTH becomes without a mapping


def npi(n: int) -> str:
    first_nine = f"1{n:08d}"
    return first_nine + npi_check_digit(first_nine)


def member(n: int, **overrides: Any) -> dict[str, str]:
    row = {
        "member_id": f"M{n:06d}",
        "identifier_system": MRN_SYSTEM,
        "identifier_value": f"MRN{n:06d}",
        "family": f"Family{n}",
        "given": f"Given{n}",
        "birth_date": "1970-04-12",
        "sex": "F",
        "phone": "555-0100",
        "address": "1 Main St, Springfield, MA, 01101",
        "pcp_npi": npi(n % 7),
        "practice": f"Practice {n % 3}",
        "program": "ACO",
        "bh_program": "N",
        "enrollment_start": "2026-01-01",
        "enrollment_end": "",
    }
    row.update({k: str(v) for k, v in overrides.items()})
    return row


def csv_text(
    rows: list[dict[str, str]],
    *,
    delimiter: str = ",",
    newline: str = "\n",
    header: tuple[str, ...] = DEFAULT_HEADER,
) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator=newline)
    writer.writerow(header)
    writer.writerows([r.get(h, "") for h in header] for r in rows)
    return buffer.getvalue()


def make_importer(engine: Any, var_dir: Any, **settings: Any) -> Any:
    """A RosterImporter on the test database with the default rules."""
    from zoneinfo import ZoneInfo

    from app.db.session import session_factory
    from app.ingest.roster_import import RosterImporter
    from app.rules.config import load_rules
    from app.rules.engine import RuleEngine
    from app.settings import DEFAULT_RULES_FILE, Settings

    zone = ZoneInfo("America/New_York")
    rules = RuleEngine(load_rules(DEFAULT_RULES_FILE), zone)
    return RosterImporter(Settings(var_dir=var_dir, **settings), session_factory(engine), rules, zone)
