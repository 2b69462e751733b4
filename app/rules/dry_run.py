"""Run a set of decoded events through the rules in memory: what tasks they would raise, complete or
cancel, without a database. `carecoord rules dry-run` prints it; a practice checks a changed rules
file against its own sample feed before deploying it."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime

from app.encounters.notice import EncounterNotice
from app.encounters.sensitivity import SensitivityPolicy, classify
from app.encounters.state import EncounterFacts, fold
from app.rules.due import anchor_of
from app.rules.engine import RuleEngine
from app.rules.facts import EncounterEvent, EncounterSummary, OpenTask, PatientFacts


@dataclass(slots=True)
class DryRunTask:
    task_id: str
    type: str
    role: str
    team: str | None
    due_at: datetime
    rule: str
    encounter: str
    status: str = "ready"
    reason: str | None = None


@dataclass(slots=True)
class DryRunStep:
    message: str
    encounter: str | None
    created: list[DryRunTask] = field(default_factory=list)
    completed: list[tuple[DryRunTask, str]] = field(default_factory=list)
    cancelled: list[tuple[DryRunTask, str]] = field(default_factory=list)


def dry_run(
    notices: Iterable[EncounterNotice],
    engine: RuleEngine,
    sensitivity: SensitivityPolicy,
    *,
    attributed: bool = True,
    practice: str | None = None,
) -> tuple[list[DryRunStep], list[DryRunTask]]:
    """(what each event did, every task at the end). Patients are told apart by their first identifier,
    visits by facility + visit number, as the consumers do; merges are not simulated."""
    history: dict[str, list[EncounterFacts]] = defaultdict(list)
    tasks: dict[str, DryRunTask] = {}
    anchors: dict[str, datetime | None] = {}
    patient_of_task: dict[str, str] = {}
    keys: set[str] = set()
    deceased: set[str] = set()
    bh_patients: set[str] = set()
    visits: dict[str, dict[str, EncounterSummary]] = defaultdict(dict)
    steps: list[DryRunStep] = []
    for notice in notices:
        patient = f"{notice.patient_key.system}|{notice.patient_key.value}"
        if notice.death_indicator:
            deceased.add(patient)
        if not notice.describes_visit:
            steps.append(DryRunStep(f"{notice.message_type} {notice.message_id}", None))
            continue
        visit = notice.visit_number or (notice.admit_time.isoformat() if notice.admit_time else notice.message_id)
        encounter = f"{notice.facility}|{visit}"
        before = fold(history[encounter])
        history[encounter].append(EncounterFacts.from_notice(notice))
        state = fold(history[encounter])
        bh = classify(
            sensitivity, hospital_service=state.hospital_service, location=state.location, diagnoses=state.diagnoses
        ).behavioral_health
        if bh:
            bh_patients.add(patient)
        visits[patient][encounter] = EncounterSummary.of(
            encounter, state.class_code, state.admit_at, state.last_event_at, bh, state.discharge_at, state.status
        )
        event = EncounterEvent(
            event_id=f"{notice.source}|{notice.message_id}",
            kind=notice.kind,
            occurred_at=notice.event_time,
            encounter_id=encounter,
            status=state.status,
            class_code=state.class_code,
            admit_at=state.admit_at,
            discharge_at=state.discharge_at,
            hospital_service=state.hospital_service,
            behavioral_health=bh,
            previous_class_code=before.class_code,
            previous_status=before.status,
        )
        open_tasks = tuple(
            OpenTask(t.task_id, t.rule, t.encounter, anchors[t.task_id])
            for t in tasks.values()
            if t.status == "ready" and patient_of_task[t.task_id] == patient
        )
        facts = PatientFacts(
            patient,
            notice.birth_date,
            patient in deceased,
            attributed=attributed,
            practice=practice,
            behavioral_health=patient in bh_patients,
            open_tasks=open_tasks,
            encounters=tuple(visits[patient].values()),
        )
        effects = engine.on_encounter_event(event, facts)
        step = DryRunStep(f"{notice.message_type} {notice.message_id}", encounter)
        for done in effects.complete:
            task = tasks[done.task_id]
            task.status, task.reason = "completed", done.reason
            step.completed.append((task, done.reason))
        for cancel in effects.cancel:
            task = tasks[cancel.task_id]
            task.status, task.reason = "cancelled", cancel.reason
            keys.discard(f"{task.rule}|{task.encounter}")
            step.cancelled.append((task, cancel.reason))
        for create in effects.create:
            key = f"{create.rule_id}|{create.encounter_id}"
            if key in keys:
                continue
            keys.add(key)
            task = DryRunTask(
                task_id=f"T{len(tasks) + 1}",
                type=create.type,
                role=create.role,
                team=create.team,
                due_at=create.due_at,
                rule=create.rule_id,
                encounter=create.encounter_id or "",
            )
            if create.completed_by:  # its evidence is already on file
                task.status, task.reason = "completed", create.completed_by
            tasks[task.task_id] = task
            anchors[task.task_id] = anchor_of(create.due_basis)
            patient_of_task[task.task_id] = patient
            step.created.append(replace(task))
        steps.append(step)
    return steps, list(tasks.values())
