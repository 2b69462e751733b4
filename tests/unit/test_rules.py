from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from app.rules.calendar import BusinessCalendar
from app.rules.config import RulesFileError, load_rules
from app.rules.due import business_due, calendar_due, end_of_day_due
from app.rules.engine import CancelTask, CompleteTask, RuleEngine
from app.rules.facts import (
    EncounterEvent,
    EncounterEventKind,
    EncounterSummary,
    OpenTask,
    PatientFacts,
    ScreeningEvent,
    ScreeningStatus,
)
from app.settings import DEFAULT_RULES_FILE

NY = ZoneInfo("America/New_York")
ENC = "00000000-0000-0000-0000-000000000001"
OTHER_ENC = "00000000-0000-0000-0000-000000000002"
ADULT = PatientFacts("p1", date(1970, 5, 1), deceased=False, attributed=True, practice="GOODHEALTH CLINIC")
CHILD = replace(ADULT, birth_date=date(2015, 3, 1))
DISCHARGED_AT = datetime(2026, 11, 20, 19, 0, tzinfo=UTC)


def discharge(
    class_code: str | None = "IMP",
    discharge_at: datetime | None = DISCHARGED_AT,
    status: str = "finished",
    behavioral_health: bool = False,
    encounter_id: str = ENC,
) -> EncounterEvent:
    return EncounterEvent(
        event_id="e1",
        kind=EncounterEventKind.DISCHARGE,
        occurred_at=datetime(2026, 11, 20, 19, 25, tzinfo=UTC),
        encounter_id=encounter_id,
        status=status,
        class_code=class_code,
        admit_at=datetime(2026, 11, 15, 13, 30, tzinfo=UTC),
        discharge_at=discharge_at,
        hospital_service="MED",
        behavioral_health=behavioral_health,
    )


def visit(kind: EncounterEventKind, class_code: str, at: datetime, **changes: object) -> EncounterEvent:
    return replace(
        discharge(),
        event_id="e2",
        kind=kind,
        encounter_id=OTHER_ENC,
        class_code=class_code,
        status="in-progress" if kind is not EncounterEventKind.DISCHARGE else "finished",
        admit_at=at,
        occurred_at=at,
        discharge_at=None,
        **changes,
    )


@pytest.fixture
def engine() -> RuleEngine:
    return RuleEngine(load_rules(DEFAULT_RULES_FILE), NY)


def created(engine: RuleEngine, event: EncounterEvent, patient: PatientFacts = ADULT) -> dict[str, object]:
    return {t.type: t for t in engine.on_encounter_event(event, patient).create}


def test_inpatient_discharge_raises_contact_and_med_rec(engine: RuleEngine) -> None:
    tasks = created(engine, discharge())
    assert set(tasks) == {"post-discharge-contact", "medication-reconciliation"}
    contact = tasks["post-discharge-contact"]
    assert contact.role == "PMC" and contact.team == "GOODHEALTH CLINIC"
    assert contact.rule_id == "post-discharge-contact" and contact.rule_version == "2"
    assert contact.due_at == datetime(2026, 11, 27, 19, 0, tzinfo=UTC)
    assert contact.due_basis["anchor"] == "discharge"
    assert contact.due_basis["anchor_at"] == DISCHARGED_AT.isoformat()
    assert contact.route_basis == {"population": "adult", "role": "PMC", "team": "GOODHEALTH CLINIC"}
    assert contact.triggering_event_ids == ("e1",)
    assert contact.dedupe_key == f"post-discharge-contact|encounter|{ENC}"
    med_rec = tasks["medication-reconciliation"]
    assert med_rec.role == "RN"
    assert med_rec.due_at == DISCHARGED_AT + timedelta(hours=72)


def test_missing_discharge_time_falls_back_to_event_time(engine: RuleEngine) -> None:
    task = created(engine, discharge(discharge_at=None))["post-discharge-contact"]
    assert task.due_basis["anchor"] == "event"
    assert task.due_at == datetime(2026, 11, 27, 19, 25, tzinfo=UTC)


def test_ed_discharge_raises_post_ed_contact_and_med_rec(engine: RuleEngine) -> None:
    assert set(created(engine, discharge("EMER"))) == {"post-ed-contact", "medication-reconciliation"}


@pytest.mark.parametrize("class_code", ["AMB", "PRENC", None])
def test_other_encounter_classes_raise_nothing(engine: RuleEngine, class_code: str | None) -> None:
    assert created(engine, discharge(class_code)) == {}


def test_observation_discharge_raises_contact(engine: RuleEngine) -> None:
    assert "post-discharge-contact" in created(engine, discharge("OBSENC"))


def test_psychiatric_discharge_adds_fuh_for_bhcf_and_routes_contact_to_bhcf(engine: RuleEngine) -> None:
    tasks = created(engine, discharge(behavioral_health=True))
    assert set(tasks) == {"post-discharge-contact", "medication-reconciliation", "fuh-follow-up"}
    assert tasks["fuh-follow-up"].role == "BHCF"
    assert tasks["post-discharge-contact"].role == "BHCF"
    assert tasks["post-discharge-contact"].route_basis["population"] == "behavioral-health"
    assert tasks["medication-reconciliation"].role == "RN"


def test_routing_pediatric_and_bh_population(engine: RuleEngine) -> None:
    assert created(engine, discharge(), CHILD)["post-discharge-contact"].role == "PCF"
    # Pediatric comes first in the shipped precedence, even for a BH stay (a practice may reorder).
    assert created(engine, discharge(behavioral_health=True), CHILD)["post-discharge-contact"].role == "PCF"
    bh_history = replace(ADULT, behavioral_health=True)  # an earlier BH encounter, screen or program
    assert created(engine, discharge(), bh_history)["post-discharge-contact"].role == "BHCF"
    # 18th birthday on the discharge day: an adult.
    eighteen = replace(ADULT, birth_date=date(2008, 11, 20))
    assert created(engine, discharge(), eighteen)["post-discharge-contact"].role == "PMC"


def test_unattributed_patients_raise_nothing_unless_the_setting_allows(engine: RuleEngine) -> None:
    stranger = replace(ADULT, attributed=False, practice=None)
    assert created(engine, discharge(), stranger) == {}
    lenient = RuleEngine(load_rules(DEFAULT_RULES_FILE), NY, require_attribution=False)
    assert created(lenient, discharge(), stranger)["post-discharge-contact"].team is None


def test_discharge_that_no_longer_stands_raises_nothing(engine: RuleEngine) -> None:
    # An A03 whose encounter a later-timed A13 already reopened.
    assert created(engine, discharge(status="in-progress")) == {}


def test_open_tasks_are_cancelled_when_their_trigger_no_longer_holds(engine: RuleEngine) -> None:
    open_tasks = (
        OpenTask("t1", "post-discharge-contact", ENC, DISCHARGED_AT),
        OpenTask("t2", "retired-rule", ENC, DISCHARGED_AT),
    )
    patient = replace(ADULT, open_tasks=open_tasks)
    reopened = engine.on_encounter_event(discharge(status="in-progress"), patient)
    assert reopened.cancel == [CancelTask("t1", "encounter is now in-progress (discharge)")]
    dead = engine.on_encounter_event(discharge(), replace(patient, deceased=True))
    assert dead.cancel == [CancelTask("t1", "patient deceased")] and dead.create == []
    assert engine.on_encounter_event(discharge(), patient).cancel == []


def test_deceased_patient_tasks_on_other_encounters_are_cancelled(engine: RuleEngine) -> None:
    patient = replace(ADULT, deceased=True, open_tasks=(OpenTask("t1", "post-discharge-contact", OTHER_ENC, None),))
    assert engine.on_encounter_event(discharge(), patient).cancel == [CancelTask("t1", "patient deceased")]


def test_office_or_telehealth_visit_after_discharge_completes_contact(engine: RuleEngine) -> None:
    patient = replace(ADULT, open_tasks=(OpenTask("t1", "post-discharge-contact", ENC, DISCHARGED_AT),))
    for class_code in ("AMB", "VR", "HH"):
        later = visit(EncounterEventKind.REGISTER, class_code, DISCHARGED_AT + timedelta(days=2))
        effects = engine.on_encounter_event(later, patient)
        assert effects.complete == [
            CompleteTask("t1", f"{class_code} encounter after the anchor", "e2", evidence_encounter_id=OTHER_ENC)
        ]
    before = visit(EncounterEventKind.REGISTER, "AMB", DISCHARGED_AT - timedelta(days=2))
    assert engine.on_encounter_event(before, patient).complete == [], "a visit before the discharge is no evidence"
    ed = visit(EncounterEventKind.REGISTER, "EMER", DISCHARGED_AT + timedelta(days=2))
    assert engine.on_encounter_event(ed, patient).complete == [], "an ED visit is not a follow-up"


def test_fuh_needs_a_behavioral_health_visit(engine: RuleEngine) -> None:
    patient = replace(ADULT, open_tasks=(OpenTask("t1", "fuh-follow-up", ENC, DISCHARGED_AT),))
    office = visit(EncounterEventKind.REGISTER, "AMB", DISCHARGED_AT + timedelta(days=3))
    assert engine.on_encounter_event(office, patient).complete == []
    bh_office = replace(office, behavioral_health=True)
    assert [c.task_id for c in engine.on_encounter_event(bh_office, patient).complete] == ["t1"]


def test_readmission_supersedes_open_post_discharge_tasks(engine: RuleEngine) -> None:
    patient = replace(
        ADULT,
        open_tasks=(
            OpenTask("t1", "post-discharge-contact", ENC, DISCHARGED_AT),
            OpenTask("t2", "medication-reconciliation", ENC, DISCHARGED_AT),
        ),
    )
    readmit = visit(EncounterEventKind.ADMIT, "IMP", DISCHARGED_AT + timedelta(days=3))
    effects = engine.on_encounter_event(readmit, patient)
    assert [c.task_id for c in effects.cancel] == ["t1", "t2"]
    assert all(c.reason.startswith("superseded by readmission") for c in effects.cancel)
    assert [t.type for t in effects.create] == ["admission-notification"]
    late_a01 = visit(EncounterEventKind.ADMIT, "IMP", DISCHARGED_AT - timedelta(days=30))
    assert engine.on_encounter_event(late_a01, patient).cancel == [], (
        "a late A01 for an earlier stay supersedes nothing"
    )


def test_admission_raises_in_reach_due_next_business_day(engine: RuleEngine) -> None:
    # Admitted Friday 2026-11-20 15:00 EST: due Monday 17:00 EST.
    admit = visit(EncounterEventKind.ADMIT, "IMP", datetime(2026, 11, 20, 20, 0, tzinfo=UTC))
    [task] = engine.on_encounter_event(admit, ADULT).create
    assert task.type == "admission-notification" and task.role == "PMC"
    assert task.due_at == datetime(2026, 11, 23, 22, 0, tzinfo=UTC)
    assert task.due_basis["skipped"] == ["2026-11-21 weekend", "2026-11-22 weekend"]


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
            DEFAULT_RULES_FILE.read_text()
            + "\n"
            + DEFAULT_RULES_FILE.read_text().split("[[rule]]", 1)[1].join(["[[rule]]", ""]),
            "duplicate rule ids",
        ),
        (DEFAULT_RULES_FILE.read_text().replace("days = 7", "days = 0", 1), "due needs days or hours"),
        (DEFAULT_RULES_FILE.read_text().replace('adult = "PMC"', 'adult = "PMC"\n  elderly = "RN"'), "elderly"),
        (DEFAULT_RULES_FILE.read_text().replace('  role = "BHCF"\n', '  role = "BHCF"\n  colour = "red"\n'), "colour"),
        (DEFAULT_RULES_FILE.read_text().replace("business_days = 1", "business_days = 0"), "business_days >= 1"),
        (DEFAULT_RULES_FILE.read_text().replace('subdivision = "MA"', 'subdivision = "ZZ"'), "unknown holiday"),
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


MA = BusinessCalendar(country="US", subdivision="MA")


def test_two_business_days_after_a_friday_evening_discharge_is_tuesday_close_of_business() -> None:
    friday_evening = datetime(2026, 11, 13, 23, 30, tzinfo=UTC)  # 18:30 EST
    due = business_due(friday_evening, "discharge", days=2, calendar=MA, close_of_business=time(17), zone=NY)
    assert due.due_at.astimezone(NY).replace(tzinfo=None) == datetime(2026, 11, 17, 17, 0)
    assert due.basis["skipped"] == ["2026-11-14 weekend", "2026-11-15 weekend"]


def test_business_days_skip_thanksgiving_and_state_holidays() -> None:
    wednesday = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
    due = business_due(wednesday, "discharge", days=1, calendar=MA, close_of_business=time(17), zone=NY)
    assert due.due_at.astimezone(NY).date() == date(2026, 11, 27)
    assert due.basis["skipped"] == ["2026-11-26 Thanksgiving Day"]
    # Patriots' Day (third Monday of April) is a Massachusetts holiday, not a federal one.
    friday = datetime(2026, 4, 17, 15, 0, tzinfo=UTC)
    assert business_due(friday, "x", days=1, calendar=MA, close_of_business=time(17), zone=NY).due_at.astimezone(
        NY
    ).date() == date(2026, 4, 21)
    federal = BusinessCalendar(country="US")
    assert business_due(friday, "x", days=1, calendar=federal, close_of_business=time(17), zone=NY).due_at.astimezone(
        NY
    ).date() == date(2026, 4, 20)


def test_organisation_closures_and_worked_holidays() -> None:
    calendar = BusinessCalendar(
        country="US", closed=frozenset({date(2026, 12, 24)}), open=frozenset({date(2026, 11, 26)})
    )
    assert not calendar.is_business_day(date(2026, 12, 24))
    assert calendar.holiday_name(date(2026, 12, 24)) == "organisation closure"
    assert calendar.is_business_day(date(2026, 11, 26))


def test_business_days_close_of_business_across_dst() -> None:
    # Friday 2026-10-30 before the fall-back Sunday: Monday close of business is 17:00 EST = 22:00Z.
    due = business_due(
        datetime(2026, 10, 30, 20, 0, tzinfo=UTC), "x", days=1, calendar=MA, close_of_business=time(17), zone=NY
    )
    assert due.due_at == datetime(2026, 11, 2, 22, 0, tzinfo=UTC)


def test_end_of_day_is_the_anchors_local_day() -> None:
    late_evening = datetime(2026, 11, 21, 2, 0, tzinfo=UTC)  # 21:00 EST on the 20th
    assert end_of_day_due(late_evening, "event", zone=NY).due_at == datetime(2026, 11, 21, 4, 59, tzinfo=UTC)


def test_calendar_open_all_week_is_refused() -> None:
    closed = BusinessCalendar(country=None, weekend=frozenset({"mon", "tue", "wed", "thu", "fri", "sat", "sun"}))
    with pytest.raises(ValueError, match="no business day"):
        closed.add_business_days(date(2026, 1, 1), 1)


def test_routing_rows_must_cover_every_population(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(DEFAULT_RULES_FILE.read_text().replace('  adult = "PMC"\n', "", 1))
    with pytest.raises(RulesFileError, match=r"no role for adult"):
        load_rules(path)


def test_routing_roles_may_not_be_empty(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(DEFAULT_RULES_FILE.read_text().replace('  adult = "PMC"\n', '  adult = " "\n', 1))
    with pytest.raises(RulesFileError, match=r"an empty role for adult"):
        load_rules(path)


def test_evidence_already_on_file_raises_the_task_completed(engine: RuleEngine) -> None:
    """The follow-up visit's ADT arrived before the discharge's (a late A03)."""
    office = EncounterSummary(OTHER_ENC, "AMB", DISCHARGED_AT + timedelta(days=2), False)
    before = EncounterSummary("enc-before", "AMB", DISCHARGED_AT - timedelta(days=2), False)
    tasks = created(engine, discharge(), replace(ADULT, encounters=(before, office)))
    assert tasks["post-discharge-contact"].completed_by == f"AMB encounter {OTHER_ENC} after the anchor"
    assert tasks["medication-reconciliation"].completed_by is None, "a visit is not a medication reconciliation"
    only_before = created(engine, discharge(), replace(ADULT, encounters=(before,)))
    assert only_before["post-discharge-contact"].completed_by is None


SCREENED_AT = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)  # 10:00 EST


def screening(instrument: str = "PHQ-9", score: int = 14, positive: bool = True, item9: int | None = 0, **kw: object):
    return ScreeningEvent("s1", instrument, score, positive, SCREENED_AT, item9=item9, **kw)  # type: ignore[arg-type]


def test_positive_phq9_raises_a_bh_referral_for_the_bhcf(engine: RuleEngine) -> None:
    [task] = engine.on_screening_event(screening(), ADULT).create
    assert (task.type, task.role, task.encounter_id) == ("bh-referral", "BHCF", None)
    assert task.due_at == SCREENED_AT + timedelta(days=3)
    assert task.route_basis["population"] == "behavioral-health"
    assert task.dedupe_key == "bh-referral|screening|s1"
    assert engine.on_screening_event(screening(score=4, positive=False), ADULT).create == []


def test_an_open_referral_makes_another_positive_screen_stand_down(engine: RuleEngine) -> None:
    patient = replace(ADULT, open_tasks=(OpenTask("t1", "bh-referral", None, SCREENED_AT),))
    assert engine.on_screening_event(screening(instrument="GAD-7"), patient).create == []


def test_phq9_item9_raises_a_same_day_urgent_response(engine: RuleEngine) -> None:
    tasks = {t.type: t for t in engine.on_screening_event(screening(item9=1), ADULT).create}
    assert set(tasks) == {"bh-referral", "suicide-risk-response"}
    risk = tasks["suicide-risk-response"]
    assert (risk.role, risk.priority) == ("RN", "urgent")
    assert risk.due_at == datetime(2026, 11, 21, 4, 59, tzinfo=UTC)  # 23:59 EST the same day


def test_positive_phq2_asks_for_a_phq9(engine: RuleEngine) -> None:
    types = {t.type for t in engine.on_screening_event(screening("PHQ-2", 3, True, None), ADULT).create}
    assert types == {"bh-referral", "phq9-follow-up"}


def test_a_screen_entered_in_error_cancels_what_it_raised(engine: RuleEngine) -> None:
    patient = replace(
        ADULT,
        open_tasks=(
            OpenTask("t1", "bh-referral", None, SCREENED_AT, ("s1",)),
            OpenTask("t2", "post-discharge-contact", ENC, DISCHARGED_AT, ("e1",)),
        ),
    )
    effects = engine.on_screening_event(screening(status=ScreeningStatus.RETRACTED), patient)
    assert effects.cancel == [CancelTask("t1", "screening result entered in error")] and effects.create == []


def test_bh_referral_loop_reaches_its_first_visit_on_a_bh_visit(engine: RuleEngine) -> None:
    """The first BH visit is a milestone of the loop, not its closure (the summary closes it)."""
    task = OpenTask("t1", "bh-referral", None, SCREENED_AT, ("s1",), business_status="sent")
    patient = replace(ADULT, open_tasks=(task,))
    bh_visit = visit(EncounterEventKind.REGISTER, "AMB", SCREENED_AT + timedelta(days=10), behavioral_health=True)
    effects = engine.on_encounter_event(bh_visit, patient)
    assert effects.complete == [] and [(a.task_id, a.business_status) for a in effects.advance] == [
        ("t1", "first-visit")
    ]


def test_screening_keys_on_an_encounter_rule_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(
        DEFAULT_RULES_FILE.read_text().replace(
            '  encounter_classes = ["EMER"]\n', '  encounter_classes = ["EMER"]\n  positive = true\n'
        )
    )
    with pytest.raises(RulesFileError, match="positive apply to screening events"):
        load_rules(path)


def ed_visit(days_before: int, n: int) -> EncounterSummary:
    at = DISCHARGED_AT - timedelta(days=days_before)
    return EncounterSummary(f"ed-{n}", "EMER", at, False, at + timedelta(hours=4))


def test_fourth_ed_visit_in_a_year_raises_a_high_risk_review(engine: RuleEngine) -> None:
    three_earlier = tuple(ed_visit(d, i) for i, d in enumerate((30, 100, 300)))
    this_visit = EncounterSummary(ENC, "EMER", DISCHARGED_AT - timedelta(hours=5), False, DISCHARGED_AT)
    patient = replace(ADULT, encounters=(*three_earlier, this_visit))
    assert "high-risk-review" in created(engine, discharge("EMER"), patient)
    a_year_ago = replace(ADULT, encounters=(*tuple(ed_visit(d, i) for i, d in enumerate((30, 100, 400))), this_visit))
    assert "high-risk-review" not in created(engine, discharge("EMER"), a_year_ago)
    reviewing = replace(patient, open_tasks=(OpenTask("t1", "high-risk-review", OTHER_ENC, None),))
    assert "high-risk-review" not in created(engine, discharge("EMER"), reviewing), "one open review per patient"


def test_readmission_within_30_days_raises_a_high_risk_review(engine: RuleEngine) -> None:
    first = EncounterSummary(
        "stay-1", "IMP", DISCHARGED_AT - timedelta(days=40), False, DISCHARGED_AT - timedelta(days=30)
    )
    this_stay = EncounterSummary(ENC, "IMP", DISCHARGED_AT - timedelta(days=5), False, DISCHARGED_AT)
    assert "high-risk-review" in created(engine, discharge(), replace(ADULT, encounters=(first, this_stay)))
    long_gap = replace(
        first, started_at=DISCHARGED_AT - timedelta(days=90), ended_at=DISCHARGED_AT - timedelta(days=60)
    )
    assert "high-risk-review" not in created(engine, discharge(), replace(ADULT, encounters=(long_gap, this_stay)))


def test_member_outreach_is_cancelled_when_the_patient_dies(engine: RuleEngine) -> None:
    patient = replace(ADULT, deceased=True, open_tasks=(OpenTask("t1", "new-member-outreach", None, None),))
    assert engine.on_encounter_event(discharge(), patient).cancel == [CancelTask("t1", "patient deceased")]
    assert engine.cancels_on_death("new-member-outreach")


def test_hours_from_the_repeated_fall_back_hour_are_elapsed_time() -> None:
    second_0130 = datetime(2026, 11, 1, 6, 30, tzinfo=UTC)  # 01:30 EST, after the clocks went back
    assert calendar_due(second_0130, "discharge", hours=72, zone=NY).due_at == second_0130 + timedelta(hours=72)


AWARE_ANCHORS = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC))


@given(anchor=AWARE_ANCHORS, days=st.integers(0, 60), hours=st.integers(0, 24 * 14))
def test_calendar_due_is_never_before_the_trigger(anchor: datetime, days: int, hours: int) -> None:
    assume(days or hours)
    due = calendar_due(anchor, "discharge", days=days, hours=hours, zone=NY).due_at
    assert due > anchor
    # Wall-clock days: within an hour (a DST change) of the elapsed time.
    assert abs((due - anchor) - timedelta(days=days, hours=hours)) <= timedelta(hours=1)


@given(anchor=AWARE_ANCHORS, days=st.integers(1, 15))
def test_business_due_is_close_of_business_on_the_nth_business_day_after_the_trigger(
    anchor: datetime, days: int
) -> None:
    due = business_due(anchor, "discharge", days=days, calendar=MA, close_of_business=time(17), zone=NY)
    local_due = due.due_at.astimezone(NY)
    assert due.due_at > anchor
    assert local_due.time() == time(17) and MA.is_business_day(local_due.date())
    start = anchor.astimezone(NY).date()
    between = [start + timedelta(days=i) for i in range(1, (local_due.date() - start).days)]
    assert sum(MA.is_business_day(d) for d in between) == days - 1  # the due day is the Nth
    assert len(due.basis["skipped"]) == sum(not MA.is_business_day(d) for d in between)


@given(anchor=AWARE_ANCHORS)
def test_end_of_day_due_is_on_the_trigger_day_and_not_before_it(anchor: datetime) -> None:
    due = end_of_day_due(anchor, "event", zone=NY).due_at
    assert due >= anchor
    assert due.astimezone(NY).date() == anchor.astimezone(NY).date()


def _conversion(previous_class: str | None, previous_status: str | None, kind: EncounterEventKind) -> EncounterEvent:
    return replace(
        visit(kind, "IMP", DISCHARGED_AT + timedelta(days=10)),
        previous_class_code=previous_class,
        previous_status=previous_status,
    )


@pytest.mark.parametrize(
    "kind", [EncounterEventKind.CLASS_CHANGE, EncounterEventKind.UPDATE, EncounterEventKind.TRANSFER]
)
def test_a_visit_entering_an_inpatient_class_raises_the_in_reach(engine: RuleEngine, kind: EncounterEventKind) -> None:
    assert "admission-notification" in created(engine, _conversion("EMER", "in-progress", kind))
    assert "admission-notification" in created(engine, _conversion(None, "unknown", kind))  # first seen as inpatient
    # Already inpatient (a repeat), or no previous state told: judged by the event's kind alone.
    assert "admission-notification" not in created(engine, _conversion("IMP", "in-progress", kind))
    assert "admission-notification" not in created(engine, _conversion(None, None, kind))


def test_a_conversion_supersedes_an_earlier_stays_post_discharge_work(engine: RuleEngine) -> None:
    task = OpenTask("t1", "post-discharge-contact", ENC, DISCHARGED_AT)
    patient = replace(ADULT, open_tasks=(task,))
    event = _conversion("EMER", "in-progress", EncounterEventKind.CLASS_CHANGE)
    [cancel] = engine.on_encounter_event(event, patient).cancel
    assert cancel.task_id == "t1" and cancel.superseded_by_encounter == OTHER_ENC
    assert not engine.on_encounter_event(_conversion("IMP", "in-progress", EncounterEventKind.UPDATE), patient).cancel
