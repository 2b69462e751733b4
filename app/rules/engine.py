"""Evaluate rules against encounter events, and re-check open tasks when their trigger may no
longer hold. Pure: returns effects; adapters persist them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from app.rules.config import RulesFile, RuleSpec, Trigger
from app.rules.due import calendar_due
from app.rules.facts import EncounterEvent, PatientFacts


@dataclass(frozen=True, slots=True)
class CreateTask:
    dedupe_key: str
    type: str
    priority: str
    role: str
    due_at: datetime
    due_basis: dict[str, Any]
    rule_id: str
    rule_version: str
    encounter_id: str
    triggering_event_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class OpenTask:
    task_id: str
    rule_id: str


@dataclass(frozen=True, slots=True)
class CancelTask:
    task_id: str
    reason: str


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
    role: str
    bh_role: str | None
    pediatric_role: str | None
    pediatric_born_after: date  # born after this day = under the pediatric age on the roster's date


class RuleEngine:
    def __init__(self, rules: RulesFile, zone: ZoneInfo) -> None:
        self._rules = [r for r in rules.rule if r.enabled]
        self._by_id = {r.id: r for r in rules.rule}
        self._member_rules = [r for r in rules.member_rule if r.enabled and r.on == "added"]
        self._zone = zone

    def on_encounter_event(self, event: EncounterEvent, patient: PatientFacts) -> list[CreateTask]:
        return [
            effect
            for rule in self._rules
            if event.kind == rule.trigger.event
            and _holds(rule.trigger, event, patient) is None
            and (effect := self._create(rule, event)) is not None
        ]

    def invalidated(self, open_tasks: list[OpenTask], event: EncounterEvent, patient: PatientFacts) -> list[CancelTask]:
        """Open tasks of this encounter whose rule's conditions no longer hold (A13, A11, death...)."""
        cancels = []
        for task in open_tasks:
            rule = self._by_id.get(task.rule_id)
            if rule is None:
                continue  # a rule since removed from the file: leave its tasks for people to close
            reason = _holds(rule.trigger, event, patient)
            if reason is not None:
                cancels.append(CancelTask(task.task_id, reason))
        return cancels

    def on_members_added(self, assigned_at: datetime, as_of: date) -> list[MemberTaskPlan]:
        plans = []
        for rule in self._member_rules:
            due = calendar_due(assigned_at, "assignment", days=rule.due.days, hours=rule.due.hours, zone=self._zone)
            age = rule.route.pediatric_under_age
            plans.append(
                MemberTaskPlan(
                    rule_id=rule.id,
                    rule_version=rule.version,
                    type=rule.task.type,
                    priority=rule.task.priority,
                    due_at=due.due_at,
                    due_basis=due.basis,
                    role=rule.route.role,
                    bh_role=rule.route.bh_role,
                    pediatric_role=rule.route.pediatric_role,
                    pediatric_born_after=_years_before(as_of, age),
                )
            )
        return plans

    def cancels_on_death(self, rule_id: str) -> bool:
        rule = self._by_id.get(rule_id)
        return rule is not None and rule.trigger.skip_deceased

    def _create(self, rule: RuleSpec, event: EncounterEvent) -> CreateTask:
        anchors = {"discharge": event.discharge_at, "admit": event.admit_at, "event": event.occurred_at}
        anchor_name = rule.due.anchor
        anchor = anchors[anchor_name]
        if anchor is None:
            # The feed omitted the specific time (e.g. PV1-45): fall back to the event time, and say so.
            anchor_name, anchor = "event", event.occurred_at
        due = calendar_due(anchor, anchor_name, days=rule.due.days, hours=rule.due.hours, zone=self._zone)
        return CreateTask(
            # One task per rule per encounter: a resent or corrected discharge does not double it.
            dedupe_key=f"{rule.id}|encounter|{event.encounter_id}",
            type=rule.task.type,
            priority=rule.task.priority,
            role=rule.route.role,
            due_at=due.due_at,
            due_basis=due.basis,
            rule_id=rule.id,
            rule_version=rule.version,
            encounter_id=event.encounter_id,
            triggering_event_ids=(event.event_id,),
        )


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February in a non-leap year
        return day.replace(year=day.year - years, day=28)


def _holds(trigger: Trigger, event: EncounterEvent, patient: PatientFacts) -> str | None:
    """None when the trigger's standing conditions hold; otherwise why not (a cancellation reason)."""
    if trigger.skip_deceased and patient.deceased:
        return "patient deceased"
    if trigger.encounter_classes and event.class_code not in trigger.encounter_classes:
        return f"encounter class is now {event.class_code or 'unknown'}"
    if trigger.encounter_statuses and event.status not in trigger.encounter_statuses:
        return f"encounter is now {event.status} ({event.kind.value})"
    return None
