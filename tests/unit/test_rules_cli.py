"""`carecoord rules check` and `carecoord rules dry-run`: no database, no broker."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.rules.commands import split_event_file
from app.settings import DEFAULT_RULES_FILE
from tests.hl7_builder import adt

runner = CliRunner()


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARECOORD_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("CARECOORD_RULES_FILE", raising=False)


def test_check_accepts_the_shipped_file_and_names_the_bad_key(tmp_path: Path) -> None:
    ok = runner.invoke(cli, ["rules", "check", str(DEFAULT_RULES_FILE)])
    assert ok.exit_code == 0, ok.output
    assert (
        "valid; 10 rules and 1 member rules" in ok.output
        and "post-discharge-contact-tcm" not in ok.output.split("enabled:")[1]
    )
    bad = tmp_path / "bad.toml"
    bad.write_text(DEFAULT_RULES_FILE.read_text().replace("hours = 72", "hours = -1"))
    refused = runner.invoke(cli, ["rules", "check", str(bad)])
    assert refused.exit_code == 1
    assert "rule.2.due.hours" in refused.output


def test_dry_run_shows_what_a_stay_would_do(tmp_path: Path) -> None:
    events = tmp_path / "feed.hl7"
    stay = dict(visit_number="V1", admit_time="20261115083000-0500")
    messages = [
        adt("A01", control_id="M1", event_time="20261115083000-0500", **stay),
        adt("A03", control_id="M2", **stay),
        adt("A13", control_id="M3", event_time="20261120150000-0500", **stay),
    ]
    events.write_text("\n".join(m.replace("\r", "\n") for m in messages))  # LF-separated, as people save them
    result = runner.invoke(
        cli, ["rules", "dry-run", str(events), "--practice", "GOODHEALTH CLINIC"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any("+ T1 admission-notification -> PMC" in line for line in lines)
    assert any("+ T3 medication-reconciliation -> RN" in line for line in lines)
    assert any("x T2 post-discharge-contact cancelled: encounter is now in-progress" in line for line in lines)
    assert any("x T1 admission-notification cancelled: encounter is now finished" in line for line in lines)
    unattributed = runner.invoke(cli, ["rules", "dry-run", str(events), "--unattributed"])
    assert unattributed.exit_code == 0 and " + T" not in unattributed.output


def test_event_files_split_into_messages_and_bundles() -> None:
    two = adt("A01", control_id="1") + "\n\n" + adt("A03", control_id="2")
    assert [source for source, _ in split_event_file(two)] == ["hl7v2", "hl7v2"]
    assert split_event_file('[{"resourceType": "Bundle"}, {"resourceType": "Bundle"}]')[1][0] == "davinci"
