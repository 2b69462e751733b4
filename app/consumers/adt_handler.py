"""Apply one ADT message: decode, then in one transaction update patient, encounter and tasks.

Outcomes: applied, duplicate (already applied: redelivery is a no-op), rejected (bad input, kept
in rejected_events). Transient database failures propagate so the consumer retries the same
message and never commits its offset before the effects are durable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from zoneinfo import ZoneInfo

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker

from app.consumers.adt_events import kind_for_trigger
from app.consumers.hl7v2_decode import AdtMessage, Hl7DecodeError, decode_adt, decode_text
from app.consumers.transient import is_transient
from app.rules.engine import RuleEngine
from app.rules.facts import EncounterEvent, PatientFacts
from app.state.encounters import upsert_encounter
from app.state.inbound import Position, already_applied, event_id_for, record_applied, record_rejected
from app.state.patients import resolve_patient
from app.state.tasks import create_task_once

log = logging.getLogger(__name__)

SOURCE = "hl7v2"


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


class AdtHandler:
    def __init__(
        self,
        sessions: async_sessionmaker,
        engine: RuleEngine,
        zone: ZoneInfo,
        authority_systems: dict[str, str],
    ) -> None:
        self._sessions = sessions
        self._engine = engine
        self._zone = zone
        self._authority_systems = authority_systems

    def decode(self, payload: bytes) -> AdtMessage:
        return decode_adt(decode_text(payload), default_zone=self._zone, authority_systems=self._authority_systems)

    async def handle(self, payload: bytes, position: Position) -> HandleResult:
        try:
            msg = self.decode(payload)
        except Hl7DecodeError as exc:
            return await self._reject(payload, position, exc.reason, exc.field)
        try:
            return await self._apply(msg, position)
        except IntegrityError:
            # A concurrent writer applied the same message first: confirm, else it is a real conflict.
            async with self._sessions() as session:
                if await already_applied(session, msg.idempotency_key):
                    return HandleResult(Outcome.DUPLICATE, str(event_id_for(msg.idempotency_key)))
            return await self._reject(payload, position, "conflicting data: integrity constraint violated", None)
        except Exception as exc:
            if is_transient(exc):
                raise
            # A deterministic failure on this message (a bug or data the schema refuses): set it aside.
            log.exception("event processing failed", extra={"topic": position.topic, "offset": position.offset})
            return await self._reject(payload, position, f"processing failed: {type(exc).__name__}: {exc}", None)

    async def _apply(self, msg: AdtMessage, position: Position) -> HandleResult:
        event_id = event_id_for(msg.idempotency_key)
        async with self._sessions() as session, session.begin():
            if await already_applied(session, msg.idempotency_key):
                return HandleResult(Outcome.DUPLICATE, str(event_id))
            patient = await resolve_patient(
                session,
                msg.identifiers,
                family_name=msg.family_name,
                given_name=msg.given_name,
                birth_date=msg.birth_date,
                sex=msg.sex,
                deceased=msg.death_indicator,
                deceased_at=msg.death_time,
            )
            await session.flush()
            kind = kind_for_trigger(msg.trigger_event)
            encounter = await upsert_encounter(session, patient.id, msg, kind)
            event = EncounterEvent(
                event_id=str(event_id),
                kind=kind,
                occurred_at=msg.event_time,
                encounter_id=str(encounter.id),
                patient_class=encounter.patient_class,
                admit_at=encounter.admit_at,
                discharge_at=encounter.discharge_at,
                hospital_service=encounter.hospital_service,
            )
            facts = PatientFacts(str(patient.id), patient.birth_date, patient.deceased)
            created = 0
            for effect in self._engine.on_encounter_event(event, facts):
                if await create_task_once(session, effect, patient.id) is not None:
                    created += 1
            record_applied(
                session,
                idempotency_key=msg.idempotency_key,
                source=SOURCE,
                message_type=f"{msg.message_code}^{msg.trigger_event}",
                position=position,
                patient_id=patient.id,
                encounter_id=encounter.id,
                event_time=msg.event_time,
            )
        log.info(
            "event applied",
            extra={"event_id": str(event_id), "type": msg.trigger_event, "tasks_created": created},
        )
        return HandleResult(Outcome.APPLIED, str(event_id), tasks_created=created)

    async def _reject(self, payload: bytes, position: Position, reason: str, field: str | None) -> HandleResult:
        async with self._sessions() as session, session.begin():
            row = await record_rejected(
                session,
                source=SOURCE,
                position=position,
                reason=reason,
                field=field,
                payload=payload,
            )
        log.warning(
            "event rejected",
            extra={
                "rejected_id": str(row.id),
                "topic": position.topic,
                "offset": position.offset,
                "field": field,
            },
        )
        return HandleResult(Outcome.REJECTED, reason=reason, field=field)
