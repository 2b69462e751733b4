"""Apply a notice to its encounter: record the event, re-fold the state, classify sensitivity."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Encounter, EncounterEvent
from app.encounters.notice import EncounterNotice
from app.encounters.sensitivity import SensitivityPolicy, classify
from app.encounters.state import EncounterFacts, EncounterState, fold


async def find_encounter(session: AsyncSession, patient_id: uuid.UUID, notice: EncounterNotice) -> Encounter | None:
    """Facility + visit number; without a visit number, the patient's visit at that facility that
    started at the notice's admit time, or (no admit time either) the patient's latest visit there."""
    query = select(Encounter).where(Encounter.facility == notice.facility)
    if notice.visit_number:
        query = query.where(Encounter.visit_number == notice.visit_number)
    else:
        query = query.where(Encounter.patient_id == patient_id, Encounter.visit_number.is_(None))
        if notice.admit_time is not None:
            query = query.where(Encounter.admit_at == notice.admit_time)
        else:
            query = query.order_by(Encounter.created_at.desc())
    # Row lock (PostgreSQL): the ADT and ENS consumers may apply events for one visit at once, and
    # each re-folds the history; serialising them keeps the second fold from missing the first event.
    return (await session.execute(query.limit(1).with_for_update())).scalar_one_or_none()


async def apply_to_encounter(
    session: AsyncSession,
    patient_id: uuid.UUID,
    notice: EncounterNotice,
    event_id: uuid.UUID,
    policy: SensitivityPolicy,
) -> tuple[Encounter, EncounterState, EncounterState]:
    """(encounter, state after the notice, state before it): rules see the change the notice made."""
    encounter = await find_encounter(session, patient_id, notice)
    if encounter is None:
        encounter = Encounter(
            patient_id=patient_id, facility=notice.facility, visit_number=notice.visit_number, status="unknown"
        )
        session.add(encounter)
        await session.flush()
    before = EncounterState(status=encounter.status or "unknown", class_code=encounter.class_code)
    facts = EncounterFacts.from_notice(notice)
    history = (
        (await session.execute(select(EncounterEvent.facts).where(EncounterEvent.encounter_id == encounter.id)))
        .scalars()
        .all()
    )
    state = fold([*(EncounterFacts.from_json(f) for f in history), facts])
    session.add(
        EncounterEvent(
            encounter_id=encounter.id,
            inbound_event_id=event_id,
            kind=facts.kind.value,
            event_time=facts.event_time,
            facts=facts.to_json(),
        )
    )
    _store(encounter, state, policy)
    return encounter, state, before


def encounter_columns(state: EncounterState, policy: SensitivityPolicy) -> dict[str, Any]:
    """The `encounters` columns a folded state determines; both apply paths store exactly these."""
    sensitivity = classify(
        policy, hospital_service=state.hospital_service, location=state.location, diagnoses=state.diagnoses
    )
    return {
        "status": state.status,
        "class_system": state.class_system,
        "class_code": state.class_code,
        "patient_class": state.patient_class,
        "location": state.location,
        "hospital_service": state.hospital_service,
        "discharge_disposition": state.discharge_disposition,
        "admit_at": state.admit_at,
        "discharge_at": state.discharge_at,
        "diagnoses": [[d.code, d.system] for d in state.diagnoses],
        "last_event_at": state.last_event_at,
        "behavioral_health": sensitivity.behavioral_health,
        "part2": sensitivity.part2,
        "security_labels": list(sensitivity.labels),
    }


def _store(encounter: Encounter, state: EncounterState, policy: SensitivityPolicy) -> None:
    for column, value in encounter_columns(state, policy).items():
        setattr(encounter, column, value)
