"""Roster import and reconciliation on the real database: adds, changes, terminations, patients shared
with ADT, task effects, idempotent re-import, refused files."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import PatientIdentifier, RosterChange, RosterImportError, RosterMember, Task, TaskHistory
from app.db.session import session_factory
from app.ingest.roster_import import ImportRequest, RosterImporter
from app.state.membership import attribution_at
from tests.roster_builder import MRN_SYSTEM, csv_text, make_importer, member, npi

ZONE = ZoneInfo("America/New_York")
DAY1, DAY2 = date(2026, 11, 2), date(2026, 11, 3)


@pytest.fixture
def importer(db: AsyncEngine, tmp_path: Path) -> RosterImporter:
    return make_importer(db, tmp_path, roster_max_error_ratio=0.5)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


async def run(importer: RosterImporter, path: Path, as_of: date = DAY1, **kw: object):  # type: ignore[no-untyped-def]
    return await importer.run(ImportRequest(path=path, filename=path.name, as_of=as_of, **kw))  # type: ignore[arg-type]


async def test_first_roster_adds_everyone_and_raises_outreach(
    importer: RosterImporter, tmp_path: Path, db: AsyncEngine
) -> None:
    rows = [member(1), member(2, bh_program="Y"), member(3, birth_date="2015-06-01")]
    out = await run(importer, write(tmp_path, "r1.csv", csv_text(rows)))
    assert (out.status, out.total_rows, out.added, out.changed, out.terminated) == ("completed", 3, 3, 0, 0)
    assert out.tasks_created == 3
    async with session_factory(db)() as s:
        roles = dict((await s.execute(select(Task.type, func.count()).group_by(Task.type))).all())
        assert roles == {"new-member-outreach": 3}
        by_role = sorted((await s.execute(select(Task.role))).scalars().all())
        assert by_role == ["BHCF", "PCF", "PMC"]
        assert await s.scalar(select(func.count()).select_from(TaskHistory)) == 3
        assert await s.scalar(select(func.count()).select_from(PatientIdentifier)) == 3


async def test_reconciliation_reports_adds_terms_changes_and_cancels_tasks(
    importer: RosterImporter, tmp_path: Path, db: AsyncEngine
) -> None:
    first = [member(i) for i in range(1, 6)]
    await run(importer, write(tmp_path, "d1.csv", csv_text(first)))
    second = [
        member(1),  # unchanged
        member(2, pcp_npi=npi(99), practice="New Practice"),  # reassignment
        member(3, family="Renamed"),  # demographics
        member(4, enrollment_end="2026-10-31"),  # ended by the file itself
        member(6),  # new; 5 is absent
    ]
    out = await run(importer, write(tmp_path, "d2.csv", csv_text(second)), as_of=DAY2)
    assert (out.added, out.changed, out.terminated, out.unchanged) == (1, 2, 2, 1)
    assert out.tasks_cancelled == 2  # members 4 and 5 had their outreach task open
    async with session_factory(db)() as s:
        changes = {
            (c.member_id, c.kind): c
            for c in (await s.execute(select(RosterChange).where(RosterChange.import_id == out.import_id))).scalars()
        }
        assert set(changes) == {
            ("M000006", "add"),
            ("M000002", "change"),
            ("M000003", "change"),
            ("M000004", "term"),
            ("M000005", "term"),
        }
        assert changes[("M000002", "change")].fields == "pcp_npi,practice"
        assert changes[("M000002", "change")].previous_practice == "Practice 2"
        assert changes[("M000003", "change")].fields == "family"
        assert changes[("M000004", "term")].effective_date == date(2026, 10, 31)
        assert changes[("M000005", "term")].effective_date == date(2026, 11, 2)
        m5 = await s.scalar(select(RosterMember).where(RosterMember.member_id == "M000005"))
        assert m5 is not None and m5.status == "terminated" and m5.enrollment_end == date(2026, 11, 2)
        cancelled = (await s.execute(select(Task).where(Task.status == "cancelled"))).scalars().all()
        assert {t.patient_id for t in cancelled} == {m5.patient_id, changes[("M000004", "term")].patient_id}
        reasons = (await s.execute(select(TaskHistory.detail).where(TaskHistory.action == "cancelled"))).scalars().all()
        assert all("disenrolled" in d["reason"] for d in reasons) and len(reasons) == 2
        # Attribution: member 5 was attributed on 1 Nov, not on 3 Nov.
        nov1 = datetime(2026, 11, 1, 15, tzinfo=UTC)
        assert [a.member_id for a in await attribution_at(s, m5.patient_id, nov1, ZONE)] == ["M000005"]
        assert await attribution_at(s, m5.patient_id, datetime(2026, 11, 3, 15, tzinfo=UTC), ZONE) == []
        m2 = await s.scalar(select(RosterMember).where(RosterMember.member_id == "M000002"))
        assert m2 is not None
        [a2] = await attribution_at(s, m2.patient_id, nov1, ZONE)
        assert (a2.practice, a2.pcp_npi, a2.program, a2.bh_program) == ("New Practice", npi(99), "ACO", False)


async def test_same_file_twice_is_a_no_op(importer: RosterImporter, tmp_path: Path, db: AsyncEngine) -> None:
    path = write(tmp_path, "same.csv", csv_text([member(1), member(2)]))
    first = await run(importer, path)
    again = await run(importer, path, as_of=DAY2)
    assert again.duplicate and again.import_id == first.import_id and again.added == 2
    async with session_factory(db)() as s:
        assert await s.scalar(select(func.count()).select_from(Task)) == 2
        assert await s.scalar(select(func.count()).select_from(RosterChange)) == 2


async def test_bad_rows_are_reported_and_skipped(importer: RosterImporter, tmp_path: Path, db: AsyncEngine) -> None:
    rows = [
        member(1),
        member(2, birth_date="1970-13-01"),
        member(3, pcp_npi="1234567890"),
        member(1, family="Dup"),
        member(4, bh_program="maybe"),
        member(5),
        member(6),
        member(7),
    ]
    out = await run(importer, write(tmp_path, "bad.csv", csv_text(rows)))
    assert (out.status, out.total_rows, out.error_rows, out.added) == ("completed", 8, 4, 4)
    async with session_factory(db)() as s:
        errors = (await s.execute(select(RosterImportError).order_by(RosterImportError.line))).scalars().all()
        assert [(e.line, e.field) for e in errors] == [
            (3, "birth_date"),
            (4, "pcp_npi"),
            (5, "member_id"),
            (6, "bh_program"),
        ]
        assert "first at line 2" in errors[2].reason


async def test_too_many_bad_rows_refuse_the_file_whole(
    importer: RosterImporter, tmp_path: Path, db: AsyncEngine
) -> None:
    rows = [member(1), member(2, sex="X"), member(3, sex="X")]
    out = await run(importer, write(tmp_path, "worse.csv", csv_text(rows)))
    assert out.status == "rejected" and "2 of 3 rows are bad" in (out.reason or "")
    async with session_factory(db)() as s:
        assert await s.scalar(select(func.count()).select_from(RosterMember)) == 0
        assert await s.scalar(select(func.count()).select_from(RosterImportError)) == 2


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("", "empty"),
        ("member_id,identifier_system\n", "missing from the header"),
        (",".join(["member_id", "identifier_system", "identifier_value"]) + "\n", "missing from the header"),
    ],
)
async def test_unusable_files_are_refused(importer: RosterImporter, tmp_path: Path, content: str, reason: str) -> None:
    out = await run(importer, write(tmp_path, "x.csv", content))
    assert out.status == "rejected" and reason in (out.reason or "")


async def test_header_only_file_terminates_no_one(importer: RosterImporter, tmp_path: Path, db: AsyncEngine) -> None:
    await run(importer, write(tmp_path, "one.csv", csv_text([member(1)])))
    out = await run(importer, write(tmp_path, "none.csv", csv_text([])), as_of=DAY2)
    assert out.status == "rejected" and out.reason == "no member rows"
    async with session_factory(db)() as s:
        assert await s.scalar(select(RosterMember.status)) == "active"


async def test_bom_crlf_and_pipe_files_read_alike(importer: RosterImporter, tmp_path: Path, db: AsyncEngine) -> None:
    importer.mappings["pipe"] = importer.mappings["default"].model_copy(update={"name": "pipe", "delimiter": "|"})
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + csv_text([member(1)], newline="\r\n").encode())
    assert (await run(importer, path)).added == 1
    piped = write(tmp_path, "p.txt", csv_text([member(1), member(2)], delimiter="|", newline="\r\n"))
    out = await run(importer, piped, as_of=DAY2, mapping="pipe")
    assert (out.status, out.added, out.changed, out.unchanged) == ("completed", 1, 0, 1)


async def test_truncated_file_reports_the_cut_row(importer: RosterImporter, tmp_path: Path, db: AsyncEngine) -> None:
    text = csv_text([member(i) for i in range(1, 5)])
    out = await run(importer, write(tmp_path, "cut.csv", text[: text.rindex(",2026-01-01")]))
    assert (out.status, out.added, out.error_rows) == ("completed", 3, 1)
    async with session_factory(db)() as s:
        err = await s.scalar(select(RosterImportError))
        assert err is not None and err.line == 5 and "expected 15 fields" in err.reason


async def test_roster_member_is_the_adt_patient(importer: RosterImporter, tmp_path: Path, db: AsyncEngine) -> None:
    """The identifier ADT resolves (PID-3 with authority GOODHEALTH) is the roster's identifier."""
    from app.consumers.hl7v2_decode import DecodeOptions, decode_hl7v2
    from app.state.patients import resolve_patient
    from tests.hl7_builder import adt

    await run(importer, write(tmp_path, "r.csv", csv_text([member(1)])))
    notice = decode_hl7v2(adt("A01", mrn="MRN000001").encode(), DecodeOptions(default_zone=ZONE))
    async with session_factory(db)() as s, s.begin():
        patient = await resolve_patient(s, notice)
        m = await s.scalar(select(RosterMember))
        assert m is not None and m.patient_id == patient.id and m.identifier_system == MRN_SYSTEM
