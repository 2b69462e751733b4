"""Evaluate rules against an encounter event. Pure: returns task effects; adapters persist them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from app.rules.config import RulesFile, RuleSpec
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


class RuleEngine:
    def __init__(self, rules: RulesFile, zone: ZoneInfo) -> None:
        self._rules = [r for r in rules.rule if r.enabled]
        self._zone = zone

    def on_encounter_event(self, event: EncounterEvent, patient: PatientFacts) -> list[CreateTask]:
        return [effect for rule in self._rules if (effect := self._evaluate(rule, event, patient)) is not None]

    def _evaluate(self, rule: RuleSpec, event: EncounterEvent, patient: PatientFacts) -> CreateTask | None:
        trig = rule.trigger
        if event.kind != trig.event:
            return None
        if trig.patient_classes and event.patient_class not in trig.patient_classes:
            return None
        if trig.skip_deceased and patient.deceased:
            return None
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
