"""The rules file: its schema, and loading it with errors that name the offending rule and key."""

from __future__ import annotations

import tomllib
from datetime import date, time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from app.rules.calendar import BusinessCalendar
from app.rules.facts import EncounterEventKind


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


POPULATIONS = ("pediatric", "behavioral-health", "adult")
Population = Literal["pediatric", "behavioral-health", "adult"]
ANY = "*"


SCREENING = "screening"
TriggerEvent = EncounterEventKind | Literal["screening"]


class Trigger(_Strict):
    """When a rule fires, and (the same conditions) while its task stays valid."""

    event: TriggerEvent
    encounter_classes: list[str] = Field(default_factory=list, description="Encounter.class codes; empty = any")
    encounter_statuses: list[str] = Field(
        default_factory=list, description="Encounter.status the visit must be in after the event; empty = any"
    )
    behavioral_health: bool | None = Field(
        default=None, description="true: only BH encounters (psychiatric service/unit, F diagnosis); false: only others"
    )
    hospital_services: list[str] = Field(default_factory=list, description="PV1-10 codes; empty = any")
    high_utilization: bool | None = Field(
        default=None, description="true: only patients over a [utilization] threshold (frequent ED use, a readmission)"
    )
    skip_deceased: bool = True
    require_attribution: bool | None = Field(
        default=None, description="only for members on the current roster; unset = CARECOORD_REQUIRE_ATTRIBUTION"
    )
    # Screening triggers.
    instruments: list[str] = Field(default_factory=list, description="PHQ-9, PHQ-2, GAD-7, AUDIT-C; empty = any")
    positive: bool | None = Field(default=None, description="true: positive screens only; false: negative only")
    item9_at_least: int | None = Field(default=None, ge=0, le=3, description="PHQ-9 item 9 at or above this")
    unless_open: list[str] = Field(
        default_factory=list, description="task types that, already open for the patient, make this rule stand down"
    )

    @model_validator(mode="after")
    def _keys_fit_the_event(self) -> Trigger:
        encounter_keys = (
            "encounter_classes",
            "encounter_statuses",
            "behavioral_health",
            "hospital_services",
            "high_utilization",
        )
        screening_keys = ("instruments", "positive", "item9_at_least")
        for keys, applies, kind in (
            (encounter_keys, isinstance(self.event, EncounterEventKind), "encounter"),
            (screening_keys, self.event == SCREENING, "screening"),
        ):
            used = [k for k in keys if getattr(self, k) not in (None, [])]
            if used and not applies:
                raise ValueError(f"{', '.join(used)} apply to {kind} events, not {self.event}")
        return self


class TaskSpec(_Strict):
    type: str = Field(min_length=1, max_length=64)
    priority: Literal["routine", "urgent", "asap", "stat"] = "routine"


class DueSpec(_Strict):
    policy: Literal["calendar", "business-days", "end-of-day"] = "calendar"
    anchor: Literal["discharge", "admit", "event"]
    days: int = Field(default=0, ge=0, description="calendar: days on the local wall clock")
    hours: int = Field(default=0, ge=0, description="calendar: elapsed hours")
    business_days: int = Field(default=0, ge=0, description="business-days: close of business on the Nth")

    @model_validator(mode="after")
    def _consistent(self) -> DueSpec:
        if self.policy == "calendar" and self.days == 0 and self.hours == 0:
            raise ValueError("due needs days or hours > 0")
        if self.policy == "business-days" and self.business_days < 1:
            raise ValueError("business-days needs business_days >= 1")
        if self.policy != "calendar" and (self.days or self.hours):
            raise ValueError(f"days and hours apply to the calendar policy, not {self.policy}")
        if self.policy != "business-days" and self.business_days:
            raise ValueError(f"business_days applies to the business-days policy, not {self.policy}")
        return self


class RouteSpec(_Strict):
    role: str | None = Field(
        default=None, min_length=1, max_length=32, description="a fixed role; unset = the routing matrix"
    )


class CompletionSpec(_Strict):
    """Evidence that the work happened, which completes the task without a person closing it."""

    encounter_classes: list[str] = Field(
        default_factory=list,
        description="an encounter of these classes starting after the task's anchor (AMB, VR, HH) completes it",
    )
    behavioral_health: bool = Field(default=False, description="only a behavioral-health encounter counts")
    evidence_codes: list[str] = Field(
        default_factory=list,
        description='"system|code" of a Procedure or Observation that completes the task (med rec: SNOMED, CPT II)',
    )
    evidence_window_days: int = Field(
        default=30,
        ge=0,
        description="evidence counts from the anchor's local date through this many days after (HEDIS MRP: 30)",
    )

    @model_validator(mode="after")
    def _coded(self) -> CompletionSpec:
        for code in self.evidence_codes:
            system, _, value = code.partition("|")
            if not system or not value or "|" in value:
                raise ValueError(f'evidence code {code!r} must be "system|code"')
        return self


class LoopSpec(_Strict):
    """A referral with loop closure (app/tasks/referral.py): the task's due time is the referral
    being sent; once sent, the loop must close within `closed_within_days` (urgent: fewer)."""

    closed_within_days: int = Field(default=30, ge=1, description="once sent, the loop closes within this")
    urgent_closed_within_days: int = Field(default=7, ge=1, description="the same for an urgent referral")
    urgent_item9_at_least: int | None = Field(
        default=1, ge=0, le=3, description="a referral raised by a screen with PHQ-9 item 9 at or above this is urgent"
    )
    visit_classes: list[str] = Field(
        default_factory=lambda: ["AMB", "VR", "HH"], description="a BH encounter of these classes is the first visit"
    )


class CancelSpec(_Strict):
    on_readmission: bool = Field(default=False, description="a new inpatient/observation admission supersedes the task")


class RuleSpec(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")
    version: str = Field(min_length=1, max_length=32)
    description: str = ""
    enabled: bool = True
    trigger: Trigger
    task: TaskSpec
    due: DueSpec
    route: RouteSpec = RouteSpec()
    complete: CompletionSpec = CompletionSpec()
    cancel: CancelSpec = CancelSpec()
    loop: LoopSpec | None = Field(default=None, description="a referral tracked through its loop milestones")


class CalendarSpec(_Strict):
    """Business days for due times: weekends, public holidays of a country/state, and closures."""

    country: str | None = "US"
    subdivision: str | None = None
    weekend: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = ["sat", "sun"]
    closed: list[date] = Field(default_factory=list, description="closures beyond public holidays")
    open: list[date] = Field(default_factory=list, description="public holidays the office works")
    close_of_business: time = time(17, 0)

    @model_validator(mode="after")
    def _known_country(self) -> CalendarSpec:
        if self.country:
            try:
                self.business_calendar().holiday_name(date(2000, 1, 1))
            except NotImplementedError as exc:
                raise ValueError(f"unknown holiday calendar {self.country}/{self.subdivision}: {exc}") from None
        return self

    def business_calendar(self) -> BusinessCalendar:
        return BusinessCalendar(
            country=self.country,
            subdivision=self.subdivision,
            weekend=frozenset(self.weekend),
            closed=frozenset(self.closed),
            open=frozenset(self.open),
        )


class RoutingSpec(_Strict):
    """The routing matrix: task type x population -> role (seed 002: every practice fills it in)."""

    pediatric_under_age: int = Field(default=18, ge=1, le=26)
    precedence: list[Population] = Field(
        default_factory=lambda: list(POPULATIONS),
        description="a patient in several populations takes the first listed",
    )
    roles: dict[str, dict[str, str]] = Field(
        description='task type (or "*" for any other) -> population (or "*" for any) -> role'
    )

    @model_validator(mode="after")
    def _complete(self) -> RoutingSpec:
        if sorted(self.precedence) != sorted(POPULATIONS):
            raise ValueError(f"precedence must list each of {', '.join(POPULATIONS)} once")
        for task_type, row in self.roles.items():
            unknown = set(row) - {*POPULATIONS, ANY}
            if unknown:
                raise ValueError(f"roles.{task_type}: unknown population {', '.join(sorted(unknown))}")
            blank = sorted(population for population, role in row.items() if not role.strip())
            if blank:
                raise ValueError(f"roles.{task_type}: an empty role for {', '.join(blank)}")
            if ANY not in row and set(row) != set(POPULATIONS):
                missing = sorted(set(POPULATIONS) - set(row))
                raise ValueError(f'roles.{task_type}: no role for {", ".join(missing)} (or give "*")')
        return self

    def role_for(self, task_type: str, population: str) -> str | None:
        row = self.roles.get(task_type) or self.roles.get(ANY)
        if row is None:
            return None
        return row.get(population) or row.get(ANY)


class LifecycleSpec(_Strict):
    """How tasks age once raised: outreach attempts, and when they count as due soon."""

    max_failed_attempts: int = Field(
        default=3, ge=1, description="unsuccessful outreach attempts before the task fails as 'unable to reach'"
    )
    due_soon_hours: int = Field(default=24, ge=0, description="an open task this close to its due time is due soon")


class ScreeningThresholds(_Strict):
    """A total at or above its threshold is a positive screen (DESIGN.md rule table; all policy)."""

    phq9: int = Field(default=10, ge=0, le=27)
    phq2: int = Field(default=3, ge=0, le=6)
    gad7: int = Field(default=10, ge=0, le=21)
    auditc_male: int = Field(default=4, ge=0, le=12)
    auditc_female: int = Field(default=3, ge=0, le=12)
    auditc_unknown_sex: int = Field(
        default=3, ge=0, le=12, description="sex not recorded: the lower cut-off, so no positive is missed"
    )
    phq9_item9: int = Field(default=1, ge=0, le=3, description="PHQ-9 item 9 at or above this flags suicide risk")


class MemberDueSpec(_Strict):
    """Due time counted from the roster's arrival (the member's assignment)."""

    days: int = Field(default=0, ge=0)
    hours: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _positive(self) -> MemberDueSpec:
        if self.days == 0 and self.hours == 0:
            raise ValueError("due needs days or hours > 0")
        return self


class MemberRuleSpec(_Strict):
    """A roster rule: fires on a reconciliation outcome (today: a member added to a roster)."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")
    version: str = Field(min_length=1, max_length=32)
    description: str = ""
    enabled: bool = True
    on: Literal["added"]
    task: TaskSpec
    due: MemberDueSpec


class UtilizationSpec(_Strict):
    """Risk stratification thresholds (seed 003: 4+ ED visits in 12 months, or a 30-day readmission
    in the last 6 months)."""

    ed_visits: int = Field(default=4, ge=1)
    ed_window_days: int = Field(default=365, ge=1)
    readmission_days: int = Field(default=30, ge=1)
    readmission_window_days: int = Field(default=183, ge=1)


class RulesFile(_Strict):
    calendar: CalendarSpec = CalendarSpec()
    lifecycle: LifecycleSpec = LifecycleSpec()
    utilization: UtilizationSpec = UtilizationSpec()
    routing: RoutingSpec
    rule: list[RuleSpec]
    member_rule: list[MemberRuleSpec] = Field(default_factory=list)
    screening: ScreeningThresholds = ScreeningThresholds()

    @model_validator(mode="after")
    def _consistent(self) -> RulesFile:
        ids = [r.id for r in (*self.rule, *self.member_rule)]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate rule ids: {', '.join(dupes)}")
        unroutable = [
            r.id for r in self.rule if r.route.role is None and self.routing.role_for(r.task.type, "adult") is None
        ] + [r.id for r in self.member_rule if self.routing.role_for(r.task.type, "adult") is None]
        if unroutable:
            raise ValueError(f'no route.role and no routing.roles row (or "*") for: {", ".join(unroutable)}')
        return self


class RulesFileError(ValueError):
    pass


def load_rules(path: Path) -> RulesFile:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RulesFileError(f"rules file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise RulesFileError(f"rules file {path} is not valid TOML: {exc}") from None
    try:
        return RulesFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise RulesFileError(f"rules file {path} is invalid: {problems}") from None
