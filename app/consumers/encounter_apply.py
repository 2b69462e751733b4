"""Apply one `EncounterNotice` inside the caller's transaction: patient, encounter fold, rules,
death cancellations and the idempotency ledger. A40/A47 apply every PID/MRG group in order; an event
the service does not act on is recorded "not acted on" (ledger status and metric), never silently.
Every feed that describes visits (HL7 v2 ADT, Da Vinci notifications, FHIR Encounter resources) goes
through here, so they share one encounter state.

Before anything is applied, times beyond the allowed skew after receipt are clamped to the receipt
time (app/encounters/skew.py), and the ledger tells a resend (a no-op) from a reused control id with
other content (applied too). Both cases are listed as data-quality findings in the same transaction.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app import clock
from app.consumers.results import HandleResult, Outcome
from app.db.models import Encounter, Patient
from app.encounters.notice import EncounterNotice
from app.encounters.sensitivity import SensitivityPolicy
from app.encounters.skew import Clamped, clamp_to_receipt
from app.encounters.state import EncounterState
from app.rules.engine import RuleEngine
from app.rules.facts import VOID_STATUSES, EncounterEvent, EncounterEventKind
from app.state.data_quality import CONTROL_ID_REUSED, EVENT_TIME_AHEAD, record_finding
from app.state.encounters import apply_to_encounter
from app.state.inbound import NOT_ACTED_ON, Position, Seen, Verdict, event_id_for, ledger_verdict, record_applied
from app.state.patient_context import closed_by_facts, load_contexts, patient_facts
from app.state.patients import apply_identifier_changes, find_patient, resolve_patient
from app.state.tasks import apply_effects, cancel_task, open_tasks_for_patient

log = logging.getLogger(__name__)


class EncounterApplier:
    def __init__(self, *, source: str, engine: RuleEngine, sensitivity: SensitivityPolicy, max_skew: timedelta) -> None:
        self.source = source
        self.engine = engine
        self._sensitivity = sensitivity
        self.max_skew = max_skew

    async def apply_in(self, session: AsyncSession, notice: EncounterNotice, position: Position) -> HandleResult:
        notice, clamped = clamp_to_receipt(notice, position.received_at or clock.now(), self.max_skew)
        event_id = event_id_for(notice.idempotency_key)
        created = cancelled = 0
        seen = await ledger_verdict(session, notice.idempotency_key, notice.message_identity)
        if seen.verdict is Verdict.RESEND:
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
            encounter, state, before = await apply_to_encounter(
                session, patient.id, notice, event_id, self._sensitivity
            )
            created, cancelled = await self._run_rules(session, notice, event_id, patient, encounter, state, before)
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
            message_identity=notice.message_identity,
            content_hash=notice.content_hash,
        )
        await self._record_findings(session, notice, event_id, position, seen, clamped)
        return HandleResult(
            Outcome.APPLIED,
            str(event_id),
            tasks_created=created,
            tasks_cancelled=cancelled,
            message_type=notice.message_type,
        )

    async def _record_findings(
        self,
        session: AsyncSession,
        notice: EncounterNotice,
        event_id: uuid.UUID,
        position: Position,
        seen: Seen,
        clamped: tuple[Clamped, ...],
    ) -> None:
        common = {"source": self.source, "event_id": event_id, "position": position}
        if seen.verdict is Verdict.REUSED:
            field = "MSH-10" if notice.source == "hl7v2" else "Bundle.id"
            detail = (
                f"{field} was already used by this sender for a message with different content "
                f"(event {seen.first_event_id}); this message was applied as well"
            )
            await record_finding(
                session,
                kind=CONTROL_ID_REUSED,
                field=field,
                detail=detail,
                related_event_id=seen.first_event_id,
                **common,
            )
            log.warning("control id reused with different content", extra={"event_id": str(event_id)})
        for c in clamped:
            detail = (
                f"{c.field} was {int(c.ahead.total_seconds())} s after the message was received (more than "
                f"{int(self.max_skew.total_seconds())} s allowed); the receipt time was used instead"
            )
            await record_finding(session, kind=EVENT_TIME_AHEAD, field=c.field, detail=detail, **common)

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
            message_identity=notice.message_identity,
            content_hash=notice.content_hash,
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
        before: EncounterState,
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
            previous_class_code=before.class_code,
            previous_status=before.status,
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
