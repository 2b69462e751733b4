"""Find or create the patient a notice is about, by any of its identifiers; merge patients (A40)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, datetime
from typing import Protocol

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import (
    Encounter,
    FhirResource,
    InboundEvent,
    Patient,
    PatientIdentifier,
    ScreeningEvent,
    Task,
    TaskHistory,
)
from app.encounters.notice import EncounterNotice
from app.encounters.notice import PatientIdentifier as Identifier
from app.state.care_plans import move_on_merge as move_care_plans_on_merge
from app.state.consents import move_on_merge as move_consents_on_merge


class PatientClaims(Protocol):
    """What a feed says about a patient: an encounter notice, or the subject of a FHIR resource."""

    @property
    def identifiers(self) -> tuple[Identifier, ...]: ...
    @property
    def patient_key(self) -> Identifier: ...
    @property
    def family_name(self) -> str | None: ...
    @property
    def given_name(self) -> str | None: ...
    @property
    def birth_date(self) -> date | None: ...
    @property
    def sex(self) -> str | None: ...
    @property
    def death_indicator(self) -> bool: ...
    @property
    def death_time(self) -> datetime | None: ...


async def _known_identifiers(
    session: AsyncSession, identifiers: Sequence[Identifier]
) -> dict[tuple[str, str], PatientIdentifier]:
    cond = or_(*[(PatientIdentifier.system == i.system) & (PatientIdentifier.value == i.value) for i in identifiers])
    rows = (await session.execute(select(PatientIdentifier).where(cond))).scalars().all()
    return {(r.system, r.value): r for r in rows}


async def _survivor(session: AsyncSession, patient_id: uuid.UUID) -> Patient:
    """Follow merge pointers, so an identifier that still names a merged record reaches the survivor."""
    patient = await session.get(Patient, patient_id)
    seen: set[uuid.UUID] = set()
    while patient is not None and patient.merged_into_id is not None and patient.id not in seen:
        seen.add(patient.id)
        patient = await session.get(Patient, patient.merged_into_id)
    assert patient is not None
    return patient


async def patient_by_id(session: AsyncSession, patient_id: uuid.UUID) -> Patient | None:
    """A patient by carecoord id; a merged record answers with its survivor."""
    if await session.get(Patient, patient_id) is None:
        return None
    return await _survivor(session, patient_id)


async def resolve_patient(session: AsyncSession, notice: PatientClaims) -> Patient:
    """Find the patient by any identifier (the feed's first one wins a conflict), else create one.
    A new patient is only that: no roster membership or attribution is implied."""
    known = await _known_identifiers(session, notice.identifiers)
    primary = known.get((notice.patient_key.system, notice.patient_key.value))
    if primary is not None:
        patient = await _survivor(session, primary.patient_id)
    elif known:
        patient = await _survivor(session, sorted((r.patient_id for r in known.values()), key=str)[0])
    else:
        patient = Patient()
        session.add(patient)
        await session.flush()
    await _attach_identifiers(session, patient, notice.identifiers, known)

    patient.family_name = notice.family_name or patient.family_name
    patient.given_name = notice.given_name or patient.given_name
    patient.birth_date = notice.birth_date or patient.birth_date
    patient.sex = notice.sex or patient.sex
    if notice.death_indicator:
        patient.deceased = True
        patient.deceased_at = notice.death_time or patient.deceased_at
    return patient


async def _attach_identifiers(
    session: AsyncSession,
    patient: Patient,
    identifiers: Sequence[Identifier],
    known: dict[tuple[str, str], PatientIdentifier],
) -> None:
    for ident in identifiers:
        if (ident.system, ident.value) not in known:
            row = PatientIdentifier(
                patient_id=patient.id, system=ident.system, value=ident.value, type_code=ident.type_code
            )
            session.add(row)
            known[(ident.system, ident.value)] = row


async def merge_patients(session: AsyncSession, survivor: Patient, notice: EncounterNotice) -> list[uuid.UUID]:
    """A40: the records MRG-1 names are merged into the survivor; returns the merged patient ids.

    Identifiers, encounters, tasks, the event ledger, FHIR clinical resources, screening events, care
    plans and consents move to the survivor; the merged record keeps a pointer so nothing that referenced
    it is orphaned.
    """
    known = await _known_identifiers(session, notice.prior_identifiers)
    merged: list[uuid.UUID] = []
    for prior_id in sorted({r.patient_id for r in known.values()}, key=str):
        prior = await _survivor(session, prior_id)
        if prior.id == survivor.id:
            continue
        await session.execute(
            update(PatientIdentifier).where(PatientIdentifier.patient_id == prior.id).values(patient_id=survivor.id)
        )
        await session.execute(update(Encounter).where(Encounter.patient_id == prior.id).values(patient_id=survivor.id))
        await session.execute(
            update(InboundEvent).where(InboundEvent.patient_id == prior.id).values(patient_id=survivor.id)
        )
        for clinical in (FhirResource, ScreeningEvent):  # FHIR clinical resources and their screenings
            await session.execute(
                update(clinical).where(clinical.patient_id == prior.id).values(patient_id=survivor.id)
            )
        moved = (await session.execute(select(Task).where(Task.patient_id == prior.id))).scalars().all()
        for task in moved:
            task.patient_id = survivor.id
            session.add(
                TaskHistory(
                    task_id=task.id,
                    actor="system:merge",
                    action="patient-merged",
                    from_status=task.status,
                    to_status=task.status,
                    detail={"from_patient": str(prior.id), "to_patient": str(survivor.id)},
                )
            )
        await move_care_plans_on_merge(session, prior.id, survivor.id)
        await move_consents_on_merge(session, prior.id, survivor.id)
        prior.merged_into_id = survivor.id
        survivor.deceased = survivor.deceased or prior.deceased
        survivor.deceased_at = survivor.deceased_at or prior.deceased_at
        merged.append(prior.id)
    # Prior identifiers no record holds yet still name this person from now on.
    await _attach_identifiers(session, survivor, notice.prior_identifiers, known)
    await session.flush()
    return merged
