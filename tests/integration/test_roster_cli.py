"""The daily roster cycle from the command line: import, diff, report, export, inbox watch."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import RosterImport, RosterMember
from tests.integration.test_cli import CARECOORD, clean_env
from tests.roster_builder import csv_text, member, npi


def carecoord(args: list[str], cwd: Path, database_url: str, **env_vars: str) -> subprocess.CompletedProcess[str]:
    env = clean_env(
        CARECOORD_DATABASE_URL=database_url, CARECOORD_AUTO_MIGRATE="false", CARECOORD_LOG_LEVEL="WARNING", **env_vars
    )
    return subprocess.run([CARECOORD, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


async def test_daily_cycle_from_the_cli(db: AsyncEngine, database_url: str, tmp_path: Path) -> None:
    day1, day2 = tmp_path / "day1.csv", tmp_path / "day2.csv"
    day1.write_text(csv_text([member(1), member(2), member(3)]))
    day2.write_text(csv_text([member(1, pcp_npi=npi(5)), member(2), member(4)]))

    done = carecoord(["roster", "import", str(day1), "--as-of", "2026-11-02"], tmp_path, database_url)
    assert done.returncode == 0, done.stderr
    assert "completed: 3 rows, 0 bad, 3 added" in done.stdout and "3/3" in done.stderr  # rich progress on stderr

    diff = carecoord(["roster", "diff", str(day2), "--as-of", "2026-11-03"], tmp_path, database_url)
    assert diff.returncode == 0, diff.stderr
    assert "nothing applied" in diff.stdout
    assert "change,M000001,2026-11-03,pcp_npi" in diff.stdout and "term,M000003,2026-11-02," in diff.stdout
    async with db.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(RosterImport)) == 1
        assert await conn.scalar(select(func.count()).where(RosterMember.status == "active")) == 3

    reports = tmp_path / "reports"
    done = carecoord(
        ["roster", "import", str(day2), "--as-of", "2026-11-03", "--report-dir", str(reports)], tmp_path, database_url
    )
    assert done.returncode == 0, done.stderr
    [report_json] = list(reports.glob("*.changes.json"))
    body = json.loads(report_json.read_text())
    assert (body["import"]["added"], body["import"]["terminated"], body["import"]["changed"]) == (1, 1, 1)
    import_id = body["import"]["id"]
    rows = list(csv.DictReader((reports / f"{import_id}.changes.csv").open()))
    assert sorted(r["kind"] for r in rows) == ["add", "change", "term"]

    again = carecoord(["roster", "import", str(day2)], tmp_path, database_url)
    assert again.returncode == 0 and "already imported" in again.stdout

    report = carecoord(["roster", "report", import_id, "--format", "csv"], tmp_path, database_url)
    assert report.stdout == (reports / f"{import_id}.changes.csv").read_text()

    for kind in ("ens", "status", "atr"):
        out = tmp_path / f"{kind}.out"
        done = carecoord(["roster", "export", kind, "--out", str(out)], tmp_path, database_url)
        assert done.returncode == 0, done.stderr
    assert [r["member_id"] for r in csv.DictReader((tmp_path / "ens.out").open())] == ["M000001", "M000002", "M000004"]
    assert json.loads((tmp_path / "atr.out").read_text())["entry"][0]["resource"]["quantity"] == 3

    refused = tmp_path / "empty.csv"
    refused.write_text("")
    done = carecoord(["roster", "import", str(refused)], tmp_path, database_url)
    assert done.returncode == 1 and "empty" in done.stdout


async def test_inbox_watch_once(db: AsyncEngine, database_url: str, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "roster.csv").write_text(csv_text([member(1)]))
    done = carecoord(["inbox", "watch", str(inbox), "--once"], tmp_path, database_url, CARECOORD_INBOX_SETTLE_S="0")
    assert done.returncode == 0, done.stderr
    assert (inbox / "processed" / "roster.csv").exists()
    async with db.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(RosterMember)) == 1
