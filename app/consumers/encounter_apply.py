"""Apply one `EncounterNotice` inside the caller's transaction: patient, encounter fold, rules,
death cancellations and the idempotency ledger. A40/A47 apply every PID/MRG group in order; an event
the service does not act on is recorded "not acted on" (ledger status and metric), never silently.
Every feed that describes visits (HL7 v2 ADT, Da Vinci notifications, FHIR Encounter resources) goes
through here, so they share one encounter state.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace

from sqlalchemy.ext.asyncio import AsyncSession

from app.consumers.results import HandleResult, Outcome
from app.db.models import Encounter, Patient
from app.encounters.notice import EncounterNotice
from app.encounters.sensitivity import SensitivityPolicy
from app.encounters.state import EncounterState
from app.rules.engine import RuleEngine
from app.rules.facts import VOID_STATUSES, EncounterEvent, EncounterEventKind
from app.state.encounters import apply_to_encounter
from app.state.inbound import NOT_ACTED_ON, Position, already_applied, event_id_for, record_applied
from app.state.patient_context import closed_by_facts, load_contexts, patient_facts
from app.state.patients import apply_identifier_changes, find_patient, resolve_patient
from app.state.tasks import apply_effects, cancel_task, open_tasks_for_patient

log = logging.getLogger(__name__)


class EncounterApplier:
    def __init__(self, *, source: str, engine: RuleEngine, sensitivity: SensitivityPolicy) -> None:
        self.source = source
        self.engine = engine
        self._sensitivity = sensitivity

    async def apply_in(self, session: AsyncSession, notice: EncounterNotice, position: Position) -> HandleResult:
        event_id = event_id_for(notice.idempotency_key)
        created = cancelled = 0
        if await already_applied(session, notice.idempotency_key):
            log.info("event already applied", extra={"event_id": str(event_id), "offset": position.offset})
            return HandleResult(Outcome.DUPLICATE, str(event_id), message_type=notice.message_type)
        if notice.kind is EncounterEventKind.OTHER and not notice.death_indicator:
            return await self._not_acted_on(session, notice, position, event_id)
        encounter: Encounter | None = None
        if notice.identifier_changes:  # A40 merge, A47 change identifier: every PID/MRG group, in order
            patient = await apply_identifier_changes(session, notice)
        else:
            patient = await resolve_patient(session, notice)
        if notice.describes_visit:
            encounter, state = await apply_to_encounter(session, patient.id, notice, event_id, self._sensitivity)
            created, cancelled = await self._run_rules(session, notice, event_id, patient, encounter, state)
        if patient.deceased and not notice.describes_visit:
            # A visit's rules already cancelled the deceased patient's open work; a death sent without
            # a visit (an A08 with PID-30 alone) reaches it here.
            cancelled += await self._cancel_for_death(session, patient, event_id)
        record_applied(
            session,
            idempotency_key=notice.idempotency_key,
            source=self.source,
            message_type=notice.message_type,
            position=position,
            patient_id=patient.id,
            encounter_id=encounter.id if encounter else None,
            event_time=notice.event_time,
        )
        return HandleResult(
            Outcome.APPLIED,
            str(event_id),
            tasks_created=created,
            tasks_cancelled=cancelled,
            message_type=notice.message_type,
        )

    async def _not_acted_on(
        self, session: AsyncSession, notice: EncounterNotice, position: Position, event_id: uuid.UUID
    ) -> HandleResult:
        """An ADT event the service has no use for (A09 tracking, A14 pending admit, A31 person update...):
        nothing changes, but the ledger records it as "not acted on" (a resend is a duplicate, data staff
        can see it arrived) and the metrics count it by type. A death it carries is still acted on."""
        patient = await find_patient(session, notice.identifiers)
        record_applied(
            session,
            idempotency_key=notice.idempotency_key,
            source=self.source,
            message_type=notice.message_type,
            position=position,
            patient_id=patient.id if patient else None,
            encounter_id=None,
            event_time=notice.event_time,
            status=NOT_ACTED_ON,
        )
        log.info("event not acted on", extra={"event_id": str(event_id), "type": notice.message_type})
        return HandleResult(Outcome.NOT_ACTED_ON, str(event_id), message_type=notice.message_type)

    async def _run_rules(
        self,
        session: AsyncSession,
        notice: EncounterNotice,
        event_id: uuid.UUID,
        patient: Patient,
        encounter: Encounter,
        state: EncounterState,
    ) -> tuple[int, int]:
        event = EncounterEvent(
            event_id=str(event_id),
            kind=notice.kind,
            occurred_at=notice.event_time,
            encounter_id=str(encounter.id),
            status=state.status,
            class_code=state.class_code,
            admit_at=state.admit_at,
            discharge_at=state.discharge_at,
            hospital_service=state.hospital_service,
            behavioral_health=encounter.behavioral_health,
        )
        await session.flush()  # the encounter's BH flag and times count towards the patient's context
        contexts = await load_contexts(session, [patient.id], self.engine.evidence_codes)
        tasks = contexts.open_tasks[patient.id]
        facts = patient_facts(patient, contexts)
        if state.status in VOID_STATUSES:  # the visit did not happen: what it closed may reopen
            closed, closed_facts = await closed_by_facts(session, patient.id, encounter.id)
            tasks = [*tasks, *closed]
            facts = replace(facts, closed_by_encounter=closed_facts)
        effects = self.engine.on_encounter_event(event, facts)
        return await apply_effects(
            session, effects, tasks, patient.id, actor=f"event:{notice.message_type}", event_id=str(event_id)
        )

    async def _cancel_for_death(self, session: AsyncSession, patient: Patient, event_id: uuid.UUID) -> int:
        tasks = await open_tasks_for_patient(session, patient.id)
        doomed = [t for t in tasks if self.engine.cancels_on_death(t.rule_id)]
        for task in doomed:
            cancel_task(session, task, reason="patient deceased", actor="event:death", event_id=str(event_id))
        return len(doomed)
