"""Apply one inbound message: decode it to a notice, then in one transaction update patient,
encounter and tasks, and record it in the idempotency ledger.

Outcomes: applied, duplicate (already applied: redelivery is a no-op), rejected (bad input, kept in
rejected_events). Transient database failures propagate so the consumer retries the same message
and never commits its offset before the effects are durable.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.consumers.batch_apply import BatchApplier
from app.consumers.transient import is_transient
from app.db.models import Encounter, Patient
from app.encounters.notice import DecodeError, EncounterNotice
from app.encounters.sensitivity import SensitivityPolicy
from app.encounters.state import EncounterState
from app.rules.engine import RuleEngine
from app.rules.facts import EncounterEvent, EncounterEventKind, PatientFacts
from app.state.encounters import apply_to_encounter
from app.state.inbound import Position, already_applied, event_id_for, record_applied, record_rejected
from app.state.limits import check_lengths
from app.state.patient_context import load_contexts
from app.state.patients import merge_patients, resolve_patient
from app.state.tasks import cancel_task, complete_task, create_task_once, open_task_facts, open_tasks_for_patient

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class HandleResult:
    outcome: Outcome
    event_id: str | None = None
    reason: str | None = None
    field: str | None = None
    tasks_created: int = 0
    tasks_cancelled: int = 0
    message_type: str | None = None

    def log_applied(self) -> None:
        """Called only after the commit, so the log never claims an effect that was rolled back."""
        if self.outcome is Outcome.APPLIED:
            log.info(
                "event applied",
                extra={
                    "event_id": self.event_id,
                    "type": self.message_type,
                    "tasks_created": self.tasks_created,
                    "tasks_cancelled": self.tasks_cancelled,
                },
            )


Decoder = Callable[[bytes], EncounterNotice]


class NoticeHandler:
    def __init__(
        self,
        *,
        source: str,
        decode: Decoder,
        sessions: async_sessionmaker,
        engine: RuleEngine,
        sensitivity: SensitivityPolicy,
        max_bytes: int,
    ) -> None:
        self.source = source
        self._decode = decode
        self._sessions = sessions
        self._engine = engine
        self._sensitivity = sensitivity
        self._max_bytes = max_bytes
        self._batch = BatchApplier(source=source, engine=engine, sensitivity=sensitivity)

    def decode(self, payload: bytes) -> EncounterNotice:
        """Every front door and both consumers decode through here, so they refuse the same input."""
        if len(payload) > self._max_bytes:
            raise DecodeError(f"message is {len(payload)} bytes; the limit is {self._max_bytes}", "size")
        try:
            notice = self._decode(payload)
        except DecodeError:
            raise
        except Exception as exc:
            # A parser library tripping over hostile input is still bad input, not a retryable fault.
            raise DecodeError(f"undecodable: {type(exc).__name__}", "MSH" if self.source == "hl7v2" else None) from None
        check_lengths(notice)
        return notice

    async def handle(self, payload: bytes, position: Position) -> HandleResult:
        try:
            notice = self.decode(payload)
        except DecodeError as exc:
            return await self._reject(payload, position, exc.reason, exc.field)
        try:
            try:
                return await self._apply(notice, position)
            except IntegrityError:
                # A concurrent writer got there first: the same message (a duplicate), or the same new
                # patient, visit or task from another feed. One fresh attempt sees its rows.
                async with self._sessions() as session:
                    if await already_applied(session, notice.idempotency_key):
                        return HandleResult(Outcome.DUPLICATE, str(event_id_for(notice.idempotency_key)))
                return await self._apply(notice, position)
        except IntegrityError:
            return await self._reject(payload, position, "conflicting data: integrity constraint violated", None)
        except Exception as exc:
            if is_transient(exc):
                raise
            # A deterministic failure on this message (a bug or data the schema refuses): set it aside.
            log.exception("event processing failed", extra={"topic": position.topic, "offset": position.offset})
            return await self._reject(payload, position, f"processing failed: {type(exc).__name__}: {exc}", None)

    async def handle_batch(self, records: list[tuple[bytes, Position]]) -> list[HandleResult] | None:
        """Apply a partition's records in order in ONE transaction: set-based when the batch allows
        (see batch_apply.py), else message by message inside it. Returns None if anything failed:
        nothing was committed, and the caller falls back to `handle` per record, which isolates it."""
        results: list[HandleResult | None] = [None] * len(records)
        decoded: list[tuple[int, EncounterNotice, Position]] = []
        rejections: list[tuple[int, DecodeError]] = []
        try:
            async with self._sessions() as session, session.begin():
                for i, (payload, position) in enumerate(records):
                    try:
                        decoded.append((i, self.decode(payload), position))
                    except DecodeError as exc:
                        await record_rejected(
                            session,
                            source=self.source,
                            position=position,
                            reason=exc.reason,
                            field=exc.field,
                            payload=payload,
                        )
                        rejections.append((i, exc))
                        results[i] = HandleResult(Outcome.REJECTED, reason=exc.reason, field=exc.field)
                bulk = await self._batch.apply(session, [(n, p) for _, n, p in decoded]) if decoded else []
                if bulk is None:
                    for i, notice, position in decoded:
                        results[i] = await self._apply_in(session, notice, position)
                else:
                    for (i, notice, _), done in zip(decoded, bulk, strict=True):
                        results[i] = (
                            HandleResult(Outcome.DUPLICATE, str(event_id_for(notice.idempotency_key)))
                            if done is None
                            else HandleResult(
                                Outcome.APPLIED,
                                done.event_id,
                                tasks_created=done.tasks_created,
                                tasks_cancelled=done.tasks_cancelled,
                                message_type=done.message_type,
                            )
                        )
        except Exception as exc:  # any failure: the per-record path decides, record by record
            log.info(
                "batch fell back to per-record processing", extra={"records": len(records), "error": type(exc).__name__}
            )
            return None
        final = [r for r in results if r is not None]
        for result in final:
            result.log_applied()
        for i, exc in rejections:
            log.warning(
                "event rejected",
                extra={"topic": records[i][1].topic, "offset": records[i][1].offset, "field": exc.field},
            )
        return final

    async def _apply(self, notice: EncounterNotice, position: Position) -> HandleResult:
        async with self._sessions() as session, session.begin():
            result = await self._apply_in(session, notice, position)
        result.log_applied()
        return result

    async def _apply_in(self, session: AsyncSession, notice: EncounterNotice, position: Position) -> HandleResult:
        event_id = event_id_for(notice.idempotency_key)
        created = cancelled = 0
        if await already_applied(session, notice.idempotency_key):
            log.info("event already applied", extra={"event_id": str(event_id), "offset": position.offset})
            return HandleResult(Outcome.DUPLICATE, str(event_id))
        patient = await resolve_patient(session, notice)
        encounter: Encounter | None = None
        if notice.kind is EncounterEventKind.MERGE:
            await merge_patients(session, patient, notice)
        if notice.describes_visit:
            encounter, state = await apply_to_encounter(session, patient.id, notice, event_id, self._sensitivity)
            created, cancelled = await self._run_rules(session, notice, event_id, patient, encounter, state)
        if patient.deceased:
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
        await session.flush()  # the encounter's BH flag counts towards the patient's population
        contexts = await load_contexts(session, [patient.id])
        tasks = contexts.open_tasks[patient.id]
        facts = PatientFacts(
            str(patient.id),
            patient.birth_date,
            patient.deceased,
            attributed=patient.id in contexts.attributed_practice,
            practice=contexts.attributed_practice.get(patient.id),
            behavioral_health=patient.id in contexts.behavioral_health,
            open_tasks=open_task_facts(tasks),
            encounters=tuple(contexts.encounters[patient.id].values()),
        )
        effects = self._engine.on_encounter_event(event, facts)
        by_id = {str(t.id): t for t in tasks}
        actor = f"event:{notice.message_type}"
        for done in effects.complete:
            complete_task(
                session, by_id[done.task_id], reason=done.reason, actor=actor, evidence_event_id=done.evidence_event_id
            )
        for cancel in effects.cancel:
            cancel_task(session, by_id[cancel.task_id], reason=cancel.reason, actor=actor, event_id=str(event_id))
        await session.flush()
        created = 0
        for effect in effects.create:
            if await create_task_once(session, effect, patient.id) is not None:
                created += 1
        return created, len(effects.cancel)

    async def _cancel_for_death(self, session: AsyncSession, patient: Patient, event_id: uuid.UUID) -> int:
        tasks = await open_tasks_for_patient(session, patient.id)
        doomed = [t for t in tasks if self._engine.cancels_on_death(t.rule_id)]
        for task in doomed:
            cancel_task(session, task, reason="patient deceased", actor="event:death", event_id=str(event_id))
        return len(doomed)

    async def _reject(self, payload: bytes, position: Position, reason: str, field: str | None) -> HandleResult:
        async with self._sessions() as session, session.begin():
            row = await record_rejected(
                session, source=self.source, position=position, reason=reason, field=field, payload=payload
            )
        log.warning(
            "event rejected",
            extra={"rejected_id": str(row.id), "topic": position.topic, "offset": position.offset, "field": field},
        )
        return HandleResult(Outcome.REJECTED, reason=reason, field=field)
