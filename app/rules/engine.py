"""Evaluate rules against events. Pure: (event, patient facts) -> effects; adapters persist them.

One call per event returns everything it causes, in the order adapters apply them: open tasks the
event completes (evidence), cancels (the trigger no longer holds, death, a readmission superseding
them), then the tasks it raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from app.rules.calendar import BusinessCalendar
from app.rules.config import SCREENING, LoopSpec, MemberRuleSpec, RulesFile, RuleSpec, Trigger
from app.rules.due import DueTime, business_due, calendar_due, end_of_day_due
from app.rules.facts import (
    VOID_STATUSES,
    ClosedTask,
    EncounterEvent,
    EncounterEventKind,
    EvidenceRecord,
    OpenTask,
    PatientFacts,
    ScreeningEvent,
    ScreeningStatus,
)
from app.rules.routing import route
from app.rules.utilization import high_utilization
from app.tasks.referral import LOOP, BusinessStatus

# Screens that put a patient in the behavioural-health population when positive.
BH_INSTRUMENTS = frozenset({"PHQ-9", "PHQ-2", "GAD-7", "AUDIT-C"})
# A new stay, for "readmission supersedes open post-discharge tasks".
ADMISSION_CLASSES = frozenset({"IMP", "OBSENC"})


@dataclass(frozen=True, slots=True)
class CreateTask:
    dedupe_key: str
    type: str
    priority: str
    role: str
    team: str | None
    due_at: datetime
    due_basis: dict[str, Any]
    route_basis: dict[str, Any]
    rule_id: str
    rule_version: str
    encounter_id: str | None  # None: raised by a screening or a roster change
    triggering_event_ids: tuple[str, ...]
    # Evidence already on file (a follow-up visit whose ADT arrived before the discharge's): the task
    # is raised and completed at once, so the measure still counts the discharge.
    completed_by: str | None = None
    completed_by_encounter: str | None = None  # the visit that was that evidence
    business_status: str | None = None  # a referral loop's milestone (app/tasks/referral.py); else None


@dataclass(frozen=True, slots=True)
class CancelTask:
    task_id: str
    reason: str
    superseded_by_encounter: str | None = None  # a readmission: the new stay's tasks link back to this one


@dataclass(frozen=True, slots=True)
class CompleteTask:
    task_id: str
    reason: str
    evidence_event_id: str
    business_status: str | None = None  # a referral loop closed by its summary: summary-received
    evidence_encounter_id: str | None = None  # the visit that was the evidence (an A11 of it reopens)


@dataclass(frozen=True, slots=True)
class ReopenTask:
    """The encounter that completed or superseded the task was cancelled: the task is open again."""

    task_id: str
    status: str  # the active status it had before it closed
    reason: str
    superseded_by_encounter: str | None = None  # the voided readmission, when it was a supersession


@dataclass(frozen=True, slots=True)
class AdvanceTask:
    """A referral loop reached a milestone on evidence (the first BH visit) without closing."""

    task_id: str
    business_status: str
    reason: str
    evidence_event_id: str


@dataclass(slots=True)
class Effects:
    complete: list[CompleteTask] = field(default_factory=list)
    cancel: list[CancelTask] = field(default_factory=list)
    create: list[CreateTask] = field(default_factory=list)
    advance: list[AdvanceTask] = field(default_factory=list)
    reopen: list[ReopenTask] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class MemberTaskPlan:
    """One task per added member, routed by the member's BH flag and age; applied set-based by the
    roster adapter, since a roster adds thousands of members at once."""

    rule_id: str
    rule_version: str
    type: str
    priority: str
    due_at: datetime
    due_basis: dict[str, Any]
    routes: tuple[tuple[str, str], ...]  # (population, role) in the routing matrix's precedence
    pediatric_born_after: date  # born after this day = under the pediatric age on the roster's date


class RuleEngine:
    def __init__(self, rules: RulesFile, zone: ZoneInfo, *, require_attribution: bool = True) -> None:
        self.rules = rules
        self._enabled = [r for r in rules.rule if r.enabled]
        self.rules_by_id = {r.id: r for r in rules.rule}
        self._member_rules = [r for r in rules.member_rule if r.enabled and r.on == "added"]
        self._member_rule_ids = {r.id for r in rules.member_rule}  # outreach to a member: pointless once deceased
        # Every rule a task may name, for its explanation: event rules and roster (member) rules.
        self.explainable_rules: dict[str, RuleSpec | MemberRuleSpec] = {r.id: r for r in rules.member_rule}
        self.explainable_rules.update(self.rules_by_id)
        self._zone = zone
        self._calendar: BusinessCalendar = rules.calendar.business_calendar()
        self._require_attribution = require_attribution
        self._evidence_codes = frozenset(code for r in self._enabled for code in r.complete.evidence_codes)

    def on_encounter_event(self, event: EncounterEvent, patient: PatientFacts) -> Effects:
        effects = Effects()
        if event.status in VOID_STATUSES:
            effects.reopen = self._reopened(event, patient)
        handled: set[str] = set()
        for task in patient.open_tasks:
            rule = self.rules_by_id.get(task.rule_id)
            if rule is None:
                if patient.deceased and task.rule_id in self._member_rule_ids:
                    effects.cancel.append(CancelTask(task.task_id, "patient deceased"))
                continue  # else a rule since removed from the file: leave its tasks for people to close
            if task.encounter_id == event.encounter_id:
                reason = _standing(rule.trigger, event, patient)
                if reason is not None:
                    effects.cancel.append(CancelTask(task.task_id, reason))
                    handled.add(task.task_id)
                continue
            if patient.deceased and rule.trigger.skip_deceased:
                effects.cancel.append(CancelTask(task.task_id, "patient deceased"))
            elif rule.loop is not None and _is_first_visit(rule.loop, task, event):
                effects.advance.append(
                    AdvanceTask(
                        task.task_id,
                        BusinessStatus.FIRST_VISIT,
                        f"BH {event.class_code} encounter after the referral",
                        event.event_id,
                    )
                )
            elif _is_evidence(rule, task, event):
                effects.complete.append(
                    CompleteTask(
                        task.task_id,
                        f"{event.class_code} encounter after the anchor",
                        event.event_id,
                        evidence_encounter_id=event.encounter_id,
                    )
                )
            elif rule.cancel.on_readmission and _is_readmission(event, task):
                effects.cancel.append(
                    CancelTask(
                        task.task_id,
                        f"superseded by readmission (event {event.event_id})",
                        superseded_by_encounter=event.encounter_id,
                    )
                )
        for rule in self._enabled:
            if _triggered(rule.trigger, event) and self._fires(rule, event, patient):
                effects.create.append(self._create(rule, event, patient))
        return effects

    def on_members_added(self, assigned_at: datetime, as_of: date) -> list[MemberTaskPlan]:
        plans = []
        for rule in self._member_rules:
            due = calendar_due(assigned_at, "assignment", days=rule.due.days, hours=rule.due.hours, zone=self._zone)
            routing = self.rules.routing
            roles = {p: routing.role_for(rule.task.type, p) for p in routing.precedence}
            plans.append(
                MemberTaskPlan(
                    rule_id=rule.id,
                    rule_version=rule.version,
                    type=rule.task.type,
                    priority=rule.task.priority,
                    due_at=due.due_at,
                    due_basis=due.basis,
                    routes=tuple((p, role) for p, role in roles.items() if role is not None),
                    pediatric_born_after=_years_before(as_of, routing.pediatric_under_age),
                )
            )
        return plans

    @property
    def evidence_codes(self) -> frozenset[str]:
        """Every "system|code" an enabled rule takes as evidence: what the FHIR decoder accepts."""
        return self._evidence_codes

    def on_evidence(self, record: EvidenceRecord, patient: PatientFacts) -> Effects:
        """A coded record of the work (a medication reconciliation) completes the patient's open tasks
        whose rule lists its code, when performed within the rule's window from the task's anchor."""
        effects = Effects()
        for task in patient.open_tasks:
            rule = self.rules_by_id.get(task.rule_id)
            if rule is not None and self._evidence_counts(rule, record, task.anchor_at):
                closed = BusinessStatus.SUMMARY_RECEIVED if rule.loop is not None else None
                effects.complete.append(CompleteTask(task.task_id, _evidence_reason(record), record.event_id, closed))
        return effects

    def _evidence_counts(self, rule: RuleSpec, record: EvidenceRecord, anchor: datetime | None) -> bool:
        """HEDIS MRP: the anchor's (discharge's) local date through `evidence_window_days` after."""
        if record.code not in rule.complete.evidence_codes:
            return False
        if anchor is None:
            return True
        first = anchor.astimezone(self._zone).date()
        performed = record.performed_at.astimezone(self._zone).date()
        return first <= performed <= first + timedelta(days=rule.complete.evidence_window_days)

    def _reopened(self, event: EncounterEvent, patient: PatientFacts) -> list[ReopenTask]:
        """The event voids its encounter (A11, FHIR cancelled / entered-in-error): what that visit
        completed, or that stay superseded, is open again, unless other evidence still completes it."""
        if patient.deceased:
            return []
        found = []
        for task in patient.closed_by_encounter:
            rule = self.rules_by_id.get(task.rule_id)
            if rule is None:
                continue
            if task.completed_by_encounter == event.encounter_id and task.status == "completed":
                if self._other_evidence(rule, task, patient, event.encounter_id):
                    continue
                why = f"the visit that completed it was cancelled ({event.kind.value}, event {event.event_id})"
            elif task.superseded_by_encounter == event.encounter_id and task.status == "cancelled":
                why = f"the readmission that superseded it was cancelled ({event.kind.value}, event {event.event_id})"
            else:
                continue
            superseding = event.encounter_id if task.superseded_by_encounter == event.encounter_id else None
            found.append(ReopenTask(task.task_id, task.previous_status, why, superseding))
        return found

    def on_evidence_retracted(self, record_id: str, patient: PatientFacts) -> Effects:
        """A record that completed tasks is entered in error (or no longer done): they are open again,
        unless other evidence (another record, a visit) still completes them. `closed_by_encounter`
        holds the tasks this record completed."""
        effects = Effects()
        if patient.deceased:
            return effects
        for task in patient.closed_by_encounter:
            rule = self.rules_by_id.get(task.rule_id)
            if rule is None or task.status != "completed" or self._other_evidence(rule, task, patient, ""):
                continue
            effects.reopen.append(
                ReopenTask(
                    task.task_id, task.previous_status, f"the record that completed it is withdrawn ({record_id})"
                )
            )
        return effects

    def _other_evidence(self, rule: RuleSpec, task: ClosedTask, patient: PatientFacts, voided: str) -> bool:
        anchor = task.anchor_at
        visits = (
            e
            for e in patient.encounters
            if e.encounter_id != voided
            and e.status not in VOID_STATUSES
            and _completes(rule, e.class_code, e.behavioral_health)
            and e.started_at is not None
            and (anchor is None or e.started_at >= anchor)
        )
        records = (r for r in patient.evidence if self._evidence_counts(rule, r, anchor))
        return next(visits, None) is not None or next(records, None) is not None

    def cancels_on_death(self, rule_id: str) -> bool:
        rule = self.rules_by_id.get(rule_id)
        return (rule is not None and rule.trigger.skip_deceased) or rule_id in self._member_rule_ids

    def _fires(self, rule: RuleSpec, event: EncounterEvent, patient: PatientFacts) -> bool:
        trigger = rule.trigger
        if _standing(trigger, event, patient) is not None or not self._attribution_allows(rule, patient):
            return False
        if trigger.unless_open and set(trigger.unless_open) & self._open_types(patient):
            return False
        if trigger.high_utilization is not None:
            high = high_utilization(patient.encounters, event.occurred_at, self.rules.utilization) is not None
            return high == trigger.high_utilization
        return True

    def _open_types(self, patient: PatientFacts, without: set[str] | frozenset[str] = frozenset()) -> set[str]:
        """Task types the patient has open (`without` the tasks being cancelled)."""
        return {
            self.rules_by_id[t.rule_id].task.type
            for t in patient.open_tasks
            if t.rule_id in self.rules_by_id and t.task_id not in without
        }

    def _due(self, rule: RuleSpec, anchor: datetime, anchor_name: str) -> DueTime:
        due = rule.due
        if due.policy == "business-days":
            return business_due(
                anchor,
                anchor_name,
                days=due.business_days,
                calendar=self._calendar,
                close_of_business=self.rules.calendar.close_of_business,
                zone=self._zone,
            )
        if due.policy == "end-of-day":
            return end_of_day_due(anchor, anchor_name, zone=self._zone)
        return calendar_due(anchor, anchor_name, days=due.days, hours=due.hours, zone=self._zone)

    def _create(self, rule: RuleSpec, event: EncounterEvent, patient: PatientFacts) -> CreateTask:
        anchors = {"discharge": event.discharge_at, "admit": event.admit_at, "event": event.occurred_at}
        anchor_name = rule.due.anchor
        anchor = anchors[anchor_name]
        if anchor is None:
            # The feed omitted the specific time (e.g. PV1-45): fall back to the event time, and say so.
            anchor_name, anchor = "event", event.occurred_at
        return self._task(
            rule,
            patient,
            anchor,
            anchor_name,
            # One task per rule per encounter: a resent or corrected discharge does not double it.
            dedupe_key=f"{rule.id}|encounter|{event.encounter_id}",
            encounter_id=event.encounter_id,
            event_id=event.event_id,
            encounter_bh=event.behavioral_health,
        )

    def _task(
        self,
        rule: RuleSpec,
        patient: PatientFacts,
        anchor: datetime,
        anchor_name: str,
        *,
        dedupe_key: str,
        encounter_id: str | None,
        event_id: str,
        encounter_bh: bool = False,
        urgent: bool = False,
    ) -> CreateTask:
        due = self._due(rule, anchor, anchor_name)
        routed = route(
            self.rules.routing,
            rule.task.type,
            patient,
            anchor.astimezone(self._zone).date(),
            encounter_bh=encounter_bh,
            fixed_role=rule.route.role,
        )
        evidence = next(
            (
                e
                for e in patient.encounters
                if e.encounter_id != encounter_id
                and e.status not in VOID_STATUSES  # a cancelled visit never counts
                and _completes(rule, e.class_code, e.behavioral_health)
                and e.started_at is not None
                and e.started_at >= anchor
            ),
            None,
        )
        record = next((r for r in patient.evidence if self._evidence_counts(rule, r, anchor)), None)
        completed_by = (
            f"{evidence.class_code} encounter {evidence.encounter_id} after the anchor"
            if evidence
            else (_evidence_reason(record) if record else None)
        )
        priority, due_basis, business_status = rule.task.priority, due.basis, None
        if rule.loop is not None:
            business_status = _born_milestone(rule.loop, patient, anchor, closed=completed_by is not None)
            due_basis = due.basis | {"loop": _loop_basis(rule.loop, urgent)}
            priority = "urgent" if urgent and priority == "routine" else priority
        return CreateTask(
            dedupe_key=dedupe_key,
            type=rule.task.type,
            priority=priority,
            role=routed.role,
            team=routed.team,
            due_at=due.due_at,
            due_basis=due_basis,
            route_basis=routed.basis(),
            rule_id=rule.id,
            rule_version=rule.version,
            encounter_id=encounter_id,
            triggering_event_ids=(event_id,),
            completed_by=completed_by,
            completed_by_encounter=evidence.encounter_id if evidence else None,
            business_status=business_status,
        )

    def on_screening_event(
        self, event: ScreeningEvent, patient: PatientFacts, other_screens: tuple[ScreeningEvent, ...] = ()
    ) -> Effects:
        """A positive screen raises its follow-up work (BH referral, suicide-risk response, a PHQ-9
        after a positive PHQ-2) unless the patient already has it open. A result amended so that it
        no longer meets a rule cancels what it raised, unless another of the patient's active screens
        (`other_screens`) still meets that rule; a result entered in error cancels what it raised and
        runs those rules again on the remaining screens (the latest that meets each)."""
        effects = Effects()
        raised = [t for t in patient.open_tasks if event.event_id in t.triggering_event_ids]
        if event.status is ScreeningStatus.RETRACTED:
            effects.cancel = [CancelTask(t.task_id, "screening result entered in error") for t in raised]
            rerun = {t.rule_id for t in raised}
            remaining = [s for s in other_screens if s.status is ScreeningStatus.ACTIVE]
            effects.create = self._rerun(rerun, remaining, patient, cancelled={t.task_id for t in raised})
            return effects
        for task in raised:
            rule = self.rules_by_id.get(task.rule_id)
            if rule is None or rule.trigger.event != SCREENING or _screening_matches(rule.trigger, event):
                continue
            if not any(_screening_matches(rule.trigger, s) for s in other_screens):
                effects.cancel.append(CancelTask(task.task_id, "screening result amended: it no longer meets the rule"))
        open_types = self._open_types(patient, without={c.task_id for c in effects.cancel})
        for rule in self._enabled:
            if rule.trigger.event != SCREENING or not _screening_matches(rule.trigger, event):
                continue
            task = self._screening_task(rule, event, patient, open_types)
            if task is not None:
                effects.create.append(task)
        return effects

    def _rerun(
        self, rule_ids: set[str], screens: list[ScreeningEvent], patient: PatientFacts, *, cancelled: set[str]
    ) -> list[CreateTask]:
        open_types = self._open_types(patient, without=cancelled)
        created = []
        for rule in self._enabled:
            if rule.id not in rule_ids or rule.trigger.event != SCREENING:
                continue
            matching = [s for s in screens if _screening_matches(rule.trigger, s)]
            if matching:
                latest = max(matching, key=lambda s: (s.effective_at, s.event_id))
                task = self._screening_task(rule, latest, patient, open_types)
                if task is not None:
                    created.append(task)
        return created

    def _screening_task(
        self, rule: RuleSpec, event: ScreeningEvent, patient: PatientFacts, open_types: set[str]
    ) -> CreateTask | None:
        """The rule's task for this screen, unless it stands down; `open_types` records it."""
        trigger = rule.trigger
        if set(trigger.unless_open) & open_types or not self._attribution_allows(rule, patient):
            return None
        if trigger.skip_deceased and patient.deceased:
            return None
        task = self._task(
            rule,
            patient,
            event.effective_at,
            "event",
            dedupe_key=f"{rule.id}|screening|{event.event_id}",
            encounter_id=None,
            event_id=event.event_id,
            encounter_bh=event.positive and event.instrument in BH_INSTRUMENTS,
            urgent=_urgent(rule.loop, event),
        )
        open_types.add(task.type)
        return task

    def _attribution_allows(self, rule: RuleSpec, patient: PatientFacts) -> bool:
        required = rule.trigger.require_attribution
        return patient.attributed or not (self._require_attribution if required is None else required)


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February in a non-leap year
        return day.replace(year=day.year - years, day=28)


def _urgent(loop: LoopSpec | None, event: ScreeningEvent) -> bool:
    """A referral raised by a screen that flags suicide risk (PHQ-9 item 9) closes its loop sooner."""
    at_least = loop.urgent_item9_at_least if loop is not None else None
    return at_least is not None and event.item9 is not None and event.item9 >= at_least


def _loop_basis(loop: LoopSpec, urgent: bool) -> dict[str, Any]:
    days = loop.urgent_closed_within_days if urgent else loop.closed_within_days
    return {"due": "referral sent", "closed_within_days_of_sent": days, "urgent": urgent}


def _born_milestone(loop: LoopSpec, patient: PatientFacts, anchor: datetime, *, closed: bool) -> str:
    """Where a new referral starts: closed when its summary is on file, at the first visit when a BH
    visit after the screen is (their feeds may run ahead of the screen's), else requested."""
    if closed:
        return BusinessStatus.SUMMARY_RECEIVED
    seen = any(
        e.behavioral_health and e.class_code in loop.visit_classes and (e.started_at or anchor) >= anchor
        for e in patient.encounters
        if e.started_at is not None and e.status not in VOID_STATUSES
    )
    return BusinessStatus.FIRST_VISIT if seen else BusinessStatus.REQUESTED


def _is_first_visit(loop: LoopSpec, task: OpenTask, event: EncounterEvent) -> bool:
    """A BH office/telehealth/home visit after the referral, while the loop has not got that far."""
    if task.business_status is None:  # raised before loops were tracked: nothing to advance
        return False
    if LOOP.index(BusinessStatus(task.business_status)) >= LOOP.index(BusinessStatus.FIRST_VISIT):
        return False
    if not event.behavioral_health or event.class_code not in loop.visit_classes or event.status in VOID_STATUSES:
        return False
    if event.kind not in (EncounterEventKind.REGISTER, EncounterEventKind.ADMIT, EncounterEventKind.DISCHARGE):
        return False
    started = event.admit_at or event.occurred_at
    return task.anchor_at is None or started >= task.anchor_at


def _evidence_reason(record: EvidenceRecord) -> str:
    return f"evidence {record.code} performed {record.performed_at.isoformat()}"


def _standing(trigger: Trigger, event: EncounterEvent, patient: PatientFacts) -> str | None:
    """None when the trigger's standing conditions hold; otherwise why not (a cancellation reason)."""
    if trigger.skip_deceased and patient.deceased:
        return "patient deceased"
    if trigger.encounter_classes and event.class_code not in trigger.encounter_classes:
        return f"encounter class is now {event.class_code or 'unknown'}"
    if trigger.encounter_statuses and event.status not in trigger.encounter_statuses:
        return f"encounter is now {event.status} ({event.kind.value})"
    if trigger.behavioral_health is not None and event.behavioral_health != trigger.behavioral_health:
        return "encounter is no longer behavioral-health" if trigger.behavioral_health else "encounter is now BH"
    if trigger.hospital_services and event.hospital_service not in trigger.hospital_services:
        return f"hospital service is now {event.hospital_service or 'unknown'}"
    return None


def _is_evidence(rule: RuleSpec, task: OpenTask, event: EncounterEvent) -> bool:
    """A later encounter of a completing class (office, telehealth, home visit) for the same patient."""
    if not _completes(rule, event.class_code, event.behavioral_health) or event.status in VOID_STATUSES:
        return False
    if event.kind not in (EncounterEventKind.REGISTER, EncounterEventKind.ADMIT, EncounterEventKind.DISCHARGE):
        return False
    started = event.admit_at or event.occurred_at
    return task.anchor_at is None or started >= task.anchor_at


def _completes(rule: RuleSpec, class_code: str | None, behavioral_health: bool) -> bool:
    classes = rule.complete.encounter_classes
    return bool(classes) and class_code in classes and (behavioral_health or not rule.complete.behavioral_health)


def _screening_matches(trigger: Trigger, event: ScreeningEvent) -> bool:
    if trigger.instruments and event.instrument not in trigger.instruments:
        return False
    if trigger.positive is not None and event.positive != trigger.positive:
        return False
    return trigger.item9_at_least is None or (event.item9 is not None and event.item9 >= trigger.item9_at_least)


def _triggered(trigger: Trigger, event: EncounterEvent) -> bool:
    """The event is the rule's trigger: its kind, or for an "admit" rule the visit entering the rule's
    classes (an ED-to-inpatient conversion), whatever message said so. Repeats raise nothing new: the
    class was already entered, and the task's dedupe key holds one task per rule per visit."""
    if event.kind == trigger.event:
        return True
    return trigger.event == EncounterEventKind.ADMIT and _entered(event, frozenset(trigger.encounter_classes))


def _entered(event: EncounterEvent, classes: frozenset[str]) -> bool:
    """The event moved the visit into one of `classes` (from another class, or from no class known)."""
    return (
        bool(classes)
        and event.previous_status is not None
        and event.class_code in classes
        and event.previous_class_code not in classes
    )


def _is_readmission(event: EncounterEvent, task: OpenTask) -> bool:
    """A new stay that began after the task's anchor (a late A01 for an earlier stay is not one); an
    ED visit converted to inpatient is one too."""
    admitted = event.kind is EncounterEventKind.ADMIT or _entered(event, ADMISSION_CLASSES)
    if not admitted or event.class_code not in ADMISSION_CLASSES:
        return False
    started = event.admit_at or event.occurred_at
    return task.anchor_at is None or started >= task.anchor_at
