from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from app.rules.config import RulesFileError, load_rules
from app.rules.due import calendar_due
from app.rules.engine import CancelTask, OpenTask, RuleEngine
from app.rules.facts import EncounterEvent, EncounterEventKind, PatientFacts
from app.settings import DEFAULT_RULES_FILE

NY = ZoneInfo("America/New_York")
ALIVE = PatientFacts("p1", None, deceased=False)


def discharge(
    class_code: str | None = "IMP", discharge_at: datetime | None = None, status: str = "finished"
) -> EncounterEvent:
    return EncounterEvent(
        event_id="e1",
        kind=EncounterEventKind.DISCHARGE,
        occurred_at=datetime(2026, 11, 20, 19, 25, tzinfo=UTC),
        encounter_id="00000000-0000-0000-0000-000000000001",
        status=status,
        class_code=class_code,
        admit_at=datetime(2026, 11, 15, 13, 30, tzinfo=UTC),
        discharge_at=discharge_at,
        hospital_service="MED",
    )


@pytest.fixture
def engine() -> RuleEngine:
    return RuleEngine(load_rules(DEFAULT_RULES_FILE), NY)


def test_inpatient_discharge_raises_post_discharge_contact_due_in_7_days(engine: RuleEngine) -> None:
    at = datetime(2026, 11, 20, 19, 0, tzinfo=UTC)
    [task] = engine.on_encounter_event(discharge(discharge_at=at), ALIVE)
    assert task.type == "post-discharge-contact"
    assert task.role == "PMC"
    assert task.rule_id == "post-discharge-contact" and task.rule_version == "1"
    assert task.due_at == datetime(2026, 11, 27, 19, 0, tzinfo=UTC)
    assert task.due_basis["anchor"] == "discharge"
    assert task.due_basis["anchor_at"] == at.isoformat()
    assert task.triggering_event_ids == ("e1",)
    assert task.dedupe_key == "post-discharge-contact|encounter|00000000-0000-0000-0000-000000000001"


def test_missing_discharge_time_falls_back_to_event_time(engine: RuleEngine) -> None:
    [task] = engine.on_encounter_event(discharge(discharge_at=None), ALIVE)
    assert task.due_basis["anchor"] == "event"
    assert task.due_at == datetime(2026, 11, 27, 19, 25, tzinfo=UTC)


@pytest.mark.parametrize("class_code", ["EMER", "AMB", "PRENC", None])
def test_other_encounter_classes_raise_nothing(engine: RuleEngine, class_code: str | None) -> None:
    assert engine.on_encounter_event(discharge(class_code), ALIVE) == []


def test_observation_discharge_raises_contact(engine: RuleEngine) -> None:
    assert [t.type for t in engine.on_encounter_event(discharge("OBSENC"), ALIVE)] == ["post-discharge-contact"]


def test_discharge_that_no_longer_stands_raises_nothing(engine: RuleEngine) -> None:
    # An A03 whose encounter a later-timed A13 already reopened.
    assert engine.on_encounter_event(discharge(status="in-progress"), ALIVE) == []


def test_open_tasks_are_invalidated_when_their_trigger_no_longer_holds(engine: RuleEngine) -> None:
    tasks = [OpenTask("t1", "post-discharge-contact"), OpenTask("t2", "retired-rule")]
    reopened = discharge(status="in-progress")
    assert engine.invalidated(tasks, reopened, ALIVE) == [CancelTask("t1", "encounter is now in-progress (discharge)")]
    assert engine.invalidated(tasks, discharge(), PatientFacts("p1", None, deceased=True)) == [
        CancelTask("t1", "patient deceased")
    ]
    assert engine.invalidated(tasks, discharge(), ALIVE) == []


def test_deceased_patient_gets_no_contact_task(engine: RuleEngine) -> None:
    assert engine.on_encounter_event(discharge(), PatientFacts("p1", None, deceased=True)) == []


def test_admit_raises_nothing_under_default_rules(engine: RuleEngine) -> None:
    event = discharge()
    admit = EncounterEvent(**{**{f: getattr(event, f) for f in event.__slots__}, "kind": EncounterEventKind.ADMIT})
    assert engine.on_encounter_event(admit, ALIVE) == []


def test_calendar_days_keep_wall_clock_across_dst() -> None:
    # Discharged 10:00 EDT on Friday 2026-10-30; clocks fall back on Sunday 2026-11-01.
    anchor = datetime(2026, 10, 30, 14, 0, tzinfo=UTC)
    due = calendar_due(anchor, "discharge", days=7, zone=NY)
    assert due.due_at.astimezone(NY).replace(tzinfo=None) == datetime(2026, 11, 6, 10, 0)
    assert due.due_at - anchor == __import__("datetime").timedelta(days=7, hours=1)


def test_calendar_hours_are_elapsed_time() -> None:
    anchor = datetime(2026, 10, 31, 14, 0, tzinfo=UTC)
    due = calendar_due(anchor, "discharge", hours=72, zone=NY)
    assert due.due_at == datetime(2026, 11, 3, 14, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[[rule]\nid=", "not valid TOML"),
        ('[[rule]]\nid = "x"\nversion = "1"\n', "trigger"),
        (
            DEFAULT_RULES_FILE.read_text() + "\n" + DEFAULT_RULES_FILE.read_text().split("[screening]")[0],
            "duplicate rule ids",
        ),
        (DEFAULT_RULES_FILE.read_text().replace("days = 7", "days = 0"), "due needs days or hours"),
        (DEFAULT_RULES_FILE.read_text().replace('role = "PMC"', 'role = "PMC"\n  colour = "red"'), "colour"),
        (DEFAULT_RULES_FILE.read_text().replace('event = "discharge"', 'event = "dischrage"'), "rule.0.trigger.event"),
        (DEFAULT_RULES_FILE.read_text().replace("encounter_classes", "patient_classes"), "patient_classes"),
        (DEFAULT_RULES_FILE.read_text().replace("phq9 = 10", "phq9 = 40"), "screening.phq9"),
    ],
)
def test_invalid_rules_files_fail_with_the_offending_key(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(content)
    with pytest.raises(RulesFileError, match=message.replace(".", r"\.")):
        load_rules(path)


def test_missing_rules_file(tmp_path: Path) -> None:
    with pytest.raises(RulesFileError, match="not found"):
        load_rules(tmp_path / "nope.toml")
