"""Find or create the patient an event is about, by any of its identifiers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.consumers.hl7v2_decode import PatientIdentifier as DecodedIdentifier
from app.db.models import Patient, PatientIdentifier


async def resolve_patient(
    session: AsyncSession,
    identifiers: Sequence[DecodedIdentifier],
    *,
    family_name: str | None,
    given_name: str | None,
    birth_date: date | None,
    sex: str | None,
    deceased: bool,
    deceased_at: datetime | None,
) -> Patient:
    pairs = [(i.system, i.value) for i in identifiers]
    cond = or_(*[(PatientIdentifier.system == s) & (PatientIdentifier.value == v) for s, v in pairs])
    rows = (await session.execute(select(PatientIdentifier).where(cond))).scalars().all()
    known = {(r.system, r.value): r for r in rows}
    patient_ids = {r.patient_id for r in rows}

    if patient_ids:
        # The first identifier is the feed's primary one; prefer the patient it names.
        primary = known.get(pairs[0])
        pid = primary.patient_id if primary else sorted(patient_ids, key=str)[0]
        patient = await session.get(Patient, pid)
        assert patient is not None
    else:
        patient = Patient()
        session.add(patient)

    for ident in identifiers:
        if (ident.system, ident.value) not in known:
            patient.identifiers.append(
                PatientIdentifier(system=ident.system, value=ident.value, type_code=ident.type_code)
            )
            known[(ident.system, ident.value)] = patient.identifiers[-1]

    patient.family_name = family_name or patient.family_name
    patient.given_name = given_name or patient.given_name
    patient.birth_date = birth_date or patient.birth_date
    patient.sex = sex or patient.sex
    if deceased:
        patient.deceased = True
        patient.deceased_at = deceased_at or patient.deceased_at
    return patient
