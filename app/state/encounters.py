"""Encounter upsert from an ADT message, keyed by facility + visit number (else patient + admit time)."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.consumers.adt_events import CLASS_CODES, STATUS_AFTER
from app.consumers.hl7v2_decode import AdtMessage
from app.db.models import Encounter
from app.rules.facts import EncounterEventKind

_TERMINAL_OR_CANCEL = {
    EncounterEventKind.DISCHARGE,
    EncounterEventKind.CANCEL_ADMIT,
    EncounterEventKind.CANCEL_DISCHARGE,
    EncounterEventKind.CANCEL_TRANSFER,
}


async def upsert_encounter(
    session: AsyncSession, patient_id: uuid.UUID, msg: AdtMessage, kind: EncounterEventKind
) -> Encounter:
    facility = msg.sending_facility
    query = select(Encounter).where(Encounter.facility == facility)
    if msg.visit_number:
        query = query.where(Encounter.visit_number == msg.visit_number)
    else:
        query = query.where(
            Encounter.patient_id == patient_id,
            Encounter.visit_number.is_(None),
            Encounter.admit_at == msg.admit_time,
        )
    encounter = (await session.execute(query.limit(1))).scalar_one_or_none()
    if encounter is None:
        encounter = Encounter(patient_id=patient_id, facility=facility, visit_number=msg.visit_number, status="unknown")
        session.add(encounter)

    is_newer = encounter.last_event_at is None or msg.event_time >= encounter.last_event_at
    status = STATUS_AFTER.get(kind)
    # Cancellations and discharges always apply (a discharge that overtakes its admit is still
    # terminal); anything else only moves an unfinished encounter forward in event time.
    if status is not None and (kind in _TERMINAL_OR_CANCEL or (is_newer and encounter.status != "finished")):
        encounter.status = status
    if kind is EncounterEventKind.CANCEL_DISCHARGE:
        encounter.discharge_at = None
    elif msg.discharge_time is not None:
        encounter.discharge_at = msg.discharge_time
    elif kind is EncounterEventKind.DISCHARGE and encounter.discharge_at is None:
        encounter.discharge_at = msg.event_time

    if is_newer or encounter.patient_class is None:
        encounter.patient_class = msg.patient_class or encounter.patient_class
        encounter.class_code = CLASS_CODES.get(msg.patient_class or "", encounter.class_code)
        encounter.hospital_service = msg.hospital_service or encounter.hospital_service
        encounter.location = msg.location or encounter.location
        encounter.discharge_disposition = msg.discharge_disposition or encounter.discharge_disposition
    encounter.admit_at = msg.admit_time or encounter.admit_at
    if is_newer:
        encounter.last_event_at = msg.event_time
    await session.flush()
    return encounter
