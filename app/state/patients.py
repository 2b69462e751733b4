"""Find or create the patient a notice is about, by any of its identifiers; merge patients (A40) and
change a wrong identifier (A47)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
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
from app.encounters.notice import DecodeError, EncounterNotice, IdentifierChange
from app.encounters.notice import PatientIdentifier as Identifier
from app.rules.facts import EncounterEventKind
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


async def find_patient(session: AsyncSession, identifiers: Sequence[Identifier]) -> Patient | None:
    """The (surviving) patient any of `identifiers` names, without creating or changing anything."""
    known = await _known_identifiers(session, identifiers)
    if not known:
        return None
    primary = known.get((identifiers[0].system, identifiers[0].value))
    return await _survivor(
        session, primary.patient_id if primary else sorted((r.patient_id for r in known.values()), key=str)[0]
    )


@dataclass(frozen=True, slots=True)
class _GroupClaims:
    """A later PID of an A40/A47: its identifiers only (the message's demographics are the first PID's)."""

    identifiers: tuple[Identifier, ...]
    family_name: str | None = None
    given_name: str | None = None
    birth_date: date | None = None
    sex: str | None = None
    death_indicator: bool = False
    death_time: datetime | None = None

    @property
    def patient_key(self) -> Identifier:
        return self.identifiers[0]


async def apply_identifier_changes(session: AsyncSession, notice: EncounterNotice) -> Patient:
    """A40 / A47: every PID/MRG group in message order; returns the patient the first PID names (its
    survivor once all groups are applied), with the message's demographics.

    A40 merges the records MRG-1 names into the PID's. A47 replaces MRG-1's identifier values with
    PID-3's on the patient that holds them: the wrong identifier stops naming the patient (it may be
    another person's), and a PID-3 that already names a different patient is refused (that is a merge,
    A40), so no record is silently joined.
    """
    first: Patient | None = None
    for n, change in enumerate(notice.identifier_changes):
        claims: PatientClaims = notice if n == 0 else _GroupClaims(change.identifiers)
        if notice.kind is EncounterEventKind.CHANGE_ID:
            await _change_identifiers(session, change)
        patient = await resolve_patient(session, claims)
        if notice.kind is EncounterEventKind.MERGE:
            await merge_patients(session, patient, change.prior_identifiers)
        first = first or patient
    assert first is not None
    return await _survivor(session, first.id)


async def _change_identifiers(session: AsyncSession, change: IdentifierChange) -> None:
    old = await _known_identifiers(session, change.prior_identifiers)
    if not old:
        return  # never heard of the wrong identifier: the PID alone says who the patient is
    owners = {(await _survivor(session, r.patient_id)).id for r in old.values()}
    new = await _known_identifiers(session, change.identifiers)
    elsewhere = {(await _survivor(session, r.patient_id)).id for r in new.values()} - owners
    if len(owners) > 1 or elsewhere:
        raise DecodeError(
            "A47: the new identifier (PID-3) already names another patient; send an A40 to merge the records"
            if elsewhere
            else "A47: the prior identifiers (MRG-1) name more than one patient",
            "PID-3" if elsewhere else "MRG-1",
            http_status=422,
        )
    [owner] = owners
    replacements = [i for i in change.identifiers if (i.system, i.value) not in new]
    kept = {(i.system, i.value) for i in change.identifiers}
    for key, row in old.items():
        if key not in kept:
            await session.delete(row)
    await session.flush()
    for ident in replacements:
        session.add(
            PatientIdentifier(patient_id=owner, system=ident.system, value=ident.value, type_code=ident.type_code)
        )
    await session.flush()


async def merge_patients(
    session: AsyncSession, survivor: Patient, prior_identifiers: Sequence[Identifier]
) -> list[uuid.UUID]:
    """A40: the records MRG-1 names are merged into the survivor; returns the merged patient ids.

    Identifiers, encounters, tasks, the event ledger, FHIR clinical resources, screening events, care
    plans and consents move to the survivor; the merged record keeps a pointer so nothing that referenced
    it is orphaned.
    """
    known = await _known_identifiers(session, prior_identifiers)
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
    await _attach_identifiers(session, survivor, prior_identifiers, known)
    await session.flush()
    return merged
