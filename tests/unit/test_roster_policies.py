"""Pure pieces around rosters: the expected-file schedule, roster rules."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from app.inbox.schedule import entry_for, overdue
from app.rules.config import RulesFileError, load_rules
from app.rules.engine import RuleEngine
from app.settings import DEFAULT_RULES_FILE, InboxSchedule

NY = ZoneInfo("America/New_York")
SCHEDULE = [
    InboxSchedule(sender="ACME", pattern="acme_*.csv", cutoff="09:00"),
    InboxSchedule(sender="CP1", pattern="cp1_*.json", format="atr", cutoff="17:30", days=["sat"]),
]


def test_files_belong_to_the_first_matching_sender() -> None:
    assert entry_for("acme_20261103.csv", SCHEDULE).sender == "ACME"  # type: ignore[union-attr]
    assert entry_for("cp1_x.json", SCHEDULE).format == "atr"  # type: ignore[union-attr]
    assert entry_for("ACME_20261103.csv", SCHEDULE) is None  # case matters, as on the SFTP server


def test_overdue_after_the_local_cutoff_on_expected_days_only() -> None:
    tuesday_0859 = datetime(2026, 11, 3, 13, 59, tzinfo=UTC)  # 08:59 in New York (EST)
    assert overdue(SCHEDULE, tuesday_0859, NY) == []
    [late] = overdue(SCHEDULE, datetime(2026, 11, 3, 14, 0, tzinfo=UTC), NY)
    assert late.entry.sender == "ACME" and late.cutoff == datetime(2026, 11, 3, 9, 0, tzinfo=NY)
    assert late.day_start == datetime(2026, 11, 3, 0, 0, tzinfo=NY)
    saturday_evening = datetime(2026, 11, 7, 23, 0, tzinfo=UTC)
    assert [e.entry.sender for e in overdue(SCHEDULE, saturday_evening, NY)] == ["CP1"]


def test_schedule_cutoff_is_validated() -> None:
    with pytest.raises(ValueError, match="cutoff"):
        InboxSchedule(sender="X", pattern="*", cutoff="25:00")


def test_new_member_outreach_plan_from_the_default_rules() -> None:
    engine = RuleEngine(load_rules(DEFAULT_RULES_FILE), NY)
    [plan] = engine.on_members_added(datetime(2026, 11, 3, 15, 0, tzinfo=UTC), date(2026, 11, 3))
    assert (plan.rule_id, plan.type) == ("new-member-outreach", "new-member-outreach")
    assert plan.routes == (("pediatric", "PCF"), ("behavioral-health", "BHCF"), ("adult", "PMC"))
    assert plan.due_at == datetime(2026, 12, 3, 15, 0, tzinfo=UTC)  # 30 calendar days, facility clock
    assert plan.pediatric_born_after == date(2008, 11, 3)


def test_member_rule_errors_name_the_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "rules.toml"
    text = DEFAULT_RULES_FILE.read_text().replace('on = "added"', 'on = "removed"')
    path.write_text(text)
    with pytest.raises(RulesFileError, match=r"member_rule\.0\.on"):
        load_rules(path)
