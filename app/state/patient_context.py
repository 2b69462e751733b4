"""What the rules need to know about patients beyond the event: their open tasks, their other
visits, whether they are in the behavioural-health population, and their attribution (active roster
membership). Set-based, so the batch path reads a whole poll's patients in a few queries and the
per-message path reads one the same way."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.consumers.fhir_decode import COUNTING_STATUSES
from app.db.models import Encounter, FhirResource, Patient, RosterMember, ScreeningEvent, Task, TaskHistory
from app.roster.reconcile import MemberStatus
from app.rules.engine import BH_INSTRUMENTS
from app.rules.facts import ClosedTask, EncounterSummary, EvidenceRecord, PatientFacts
from app.state.tasks import CANCELLED, closed_task_facts, open_task_facts
from app.tasks.lifecycle import ACTIVE_STATUSES


@dataclass(slots=True)
class PatientContexts:
    open_tasks: dict[uuid.UUID, list[Task]] = field(default_factory=lambda: defaultdict(list))
    # patient -> encounter id -> summary: evidence rules look across the patient's visits
    encounters: dict[uuid.UUID, dict[uuid.UUID, EncounterSummary]] = field(default_factory=lambda: defaultdict(dict))
    # In the BH population for reasons other than their visits: an active positive BH screen, a BH
    # program on an active roster row. Visits count as they stand now (`in_bh_population`).
    bh_beyond_visits: set[uuid.UUID] = field(default_factory=set)
    # patient -> attributed practice; absent = not an active member of any current roster
    attributed_practice: dict[uuid.UUID, str | None] = field(default_factory=dict)
    # patient -> coded evidence on file (med rec Procedures / Observations), for tasks raised after it
    evidence: dict[uuid.UUID, list[EvidenceRecord]] = field(default_factory=lambda: defaultdict(list))


async def load_contexts(
    session: AsyncSession, patient_ids: Collection[uuid.UUID], evidence_codes: Collection[str] = ()
) -> PatientContexts:
    """`evidence_codes`: the rules' evidence codes (`RuleEngine.evidence_codes`); records so coded are
    loaded so a task raised after them (a late ADT) is born completed."""
    found = PatientContexts()
    if not patient_ids:
        return found
    ids = set(patient_ids)
    # Locked until the event's transaction commits: the API (attempts) and the escalation pass lock
    # the same rows, so a task is never changed under a consumer that is about to close it.
    tasks = await session.execute(
        select(Task)
        .where(Task.patient_id.in_(ids), Task.status.in_(ACTIVE_STATUSES))
        .order_by(Task.id)
        .with_for_update()
    )
    for task in tasks.scalars():
        found.open_tasks[task.patient_id].append(task)
    visits = await session.execute(
        select(
            Encounter.id,
            Encounter.patient_id,
            Encounter.class_code,
            Encounter.admit_at,
            Encounter.last_event_at,
            Encounter.behavioral_health,
            Encounter.discharge_at,
            Encounter.status,
        ).where(Encounter.patient_id.in_(ids))
    )
    for enc_id, patient_id, class_code, admit_at, last_event_at, bh, discharge_at, status in visits.all():
        found.encounters[patient_id][enc_id] = EncounterSummary.of(
            str(enc_id), class_code, admit_at, last_event_at, bh, discharge_at, status
        )
    positive_screens = await session.execute(
        select(ScreeningEvent.patient_id).where(
            ScreeningEvent.patient_id.in_(ids),
            ScreeningEvent.positive.is_(True),
            ScreeningEvent.status == "active",
            ScreeningEvent.instrument.in_(BH_INSTRUMENTS),
        )
    )
    found.bh_beyond_visits.update(positive_screens.scalars())
    # Active roster membership, counting records an A40 merged into the patient; the first practice
    # (by sender) is the team when a member is on several rosters.
    survivor = func.coalesce(Patient.merged_into_id, Patient.id)
    members = await session.execute(
        select(survivor, RosterMember.practice, RosterMember.bh_program)
        .join(Patient, Patient.id == RosterMember.patient_id)
        .where(RosterMember.status == MemberStatus.ACTIVE, or_(Patient.id.in_(ids), Patient.merged_into_id.in_(ids)))
        .order_by(RosterMember.sender, RosterMember.member_id)
    )
    for patient_id, practice, bh_program in members.all():
        found.attributed_practice.setdefault(patient_id, practice)
        if bh_program:
            found.bh_beyond_visits.add(patient_id)
    if evidence_codes:
        await _load_evidence(session, ids, evidence_codes, found)
    return found


async def _load_evidence(
    session: AsyncSession, ids: set[uuid.UUID], codes: Collection[str], found: PatientContexts
) -> None:
    done = or_(
        *(
            and_(FhirResource.resource_type == kind, FhirResource.status.in_(statuses))
            for kind, statuses in COUNTING_STATUSES.items()
        )
    )
    rows = await session.execute(
        select(FhirResource.id, FhirResource.patient_id, FhirResource.code, FhirResource.effective_at)
        .where(
            FhirResource.patient_id.in_(ids),
            FhirResource.code.in_(set(codes)),
            FhirResource.effective_at.is_not(None),
            done,
        )
        .order_by(FhirResource.effective_at, FhirResource.id)
    )
    for row_id, patient_id, code, performed_at in rows.all():
        found.evidence[patient_id].append(EvidenceRecord(str(row_id), code, performed_at))


async def load_closed_by(session: AsyncSession, patient_id: uuid.UUID, encounter_id: uuid.UUID) -> list[Task]:
    """The patient's tasks this encounter closed: completed by it as evidence, or superseded by it
    (a readmission). Locked, as open tasks are: a reversal (A11) may reopen them."""
    closed = or_(
        and_(Task.completed_by_encounter_id == encounter_id, Task.status == "completed"),
        and_(Task.superseded_by_encounter_id == encounter_id, Task.status == CANCELLED),
    )
    query = select(Task).where(Task.patient_id == patient_id, closed).order_by(Task.id).with_for_update()
    return list((await session.execute(query)).scalars().all())


async def previous_statuses(session: AsyncSession, tasks: list[Task]) -> dict[uuid.UUID, str]:
    """Each closed task's status just before it closed (its latest history row into that status)."""
    if not tasks:
        return {}
    now = {t.id: t.status for t in tasks}
    rows = await session.execute(
        select(TaskHistory.task_id, TaskHistory.from_status, TaskHistory.to_status)
        .where(TaskHistory.task_id.in_(now))
        .order_by(TaskHistory.id)
    )
    found: dict[uuid.UUID, str] = {}
    for task_id, from_status, to_status in rows.all():
        if to_status == now[task_id] and from_status in ACTIVE_STATUSES:
            found[task_id] = from_status
    return found


async def closed_by_facts(
    session: AsyncSession, patient_id: uuid.UUID, encounter_id: uuid.UUID
) -> tuple[list[Task], tuple[ClosedTask, ...]]:
    tasks = await load_closed_by(session, patient_id, encounter_id)
    return tasks, closed_task_facts(tasks, await previous_statuses(session, tasks))


async def completed_by_record(
    session: AsyncSession, patient_id: uuid.UUID, record_id: uuid.UUID
) -> tuple[list[Task], tuple[ClosedTask, ...]]:
    """The patient's tasks a stored evidence record (a Procedure, a consult note) completed, read from
    their completion history; rare (a retraction), so filtered here rather than by a JSON query."""
    completed = (
        (
            await session.execute(
                select(Task)
                .where(Task.patient_id == patient_id, Task.status == "completed")
                .order_by(Task.id)
                .with_for_update()
            )
        )
        .scalars()
        .all()
    )
    if not completed:
        return [], ()
    closes = await session.execute(
        select(TaskHistory.task_id, TaskHistory.detail)
        .where(TaskHistory.task_id.in_([t.id for t in completed]), TaskHistory.action == "completed")
        .order_by(TaskHistory.id)
    )
    latest = {task_id: detail for task_id, detail in closes.all()}
    tasks = [t for t in completed if (latest.get(t.id) or {}).get("evidence_event_id") == str(record_id)]
    return tasks, closed_task_facts(tasks, await previous_statuses(session, tasks))


def patient_facts(patient: Patient, contexts: PatientContexts) -> PatientFacts:
    """The rules' view of one patient, from its loaded context."""
    return PatientFacts(
        str(patient.id),
        patient.birth_date,
        patient.deceased,
        attributed=patient.id in contexts.attributed_practice,
        practice=contexts.attributed_practice.get(patient.id),
        behavioral_health=in_bh_population(patient.id, contexts.bh_beyond_visits, contexts.encounters[patient.id]),
        open_tasks=open_task_facts(contexts.open_tasks[patient.id]),
        encounters=tuple(contexts.encounters[patient.id].values()),
        evidence=tuple(contexts.evidence.get(patient.id, ())),
    )


def in_bh_population(
    patient_id: uuid.UUID, beyond_visits: set[uuid.UUID], visits: dict[uuid.UUID, EncounterSummary]
) -> bool:
    return patient_id in beyond_visits or any(v.behavioral_health for v in visits.values())
