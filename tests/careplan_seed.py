"""Seed rows for care plan tests: a patient with an identifier, in scope of a role and team through a task."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.db.models import Patient, PatientIdentifier, RosterImport, RosterMember, Task

MRN_SYSTEM = "urn:test:mrn"


@dataclass(frozen=True)
class Seeded:
    patient_id: uuid.UUID
    task_id: uuid.UUID
    mrn: str


async def seed_patient(db: AsyncEngine, *, role: str = "BHCF", team: str = "T1") -> Seeded:
    """A patient whose one open task (role, team) puts them in that role and team's scope."""
    mrn = "MRN" + uuid.uuid4().hex[:10]
    async with AsyncSession(db) as session, session.begin():
        patient = Patient(family_name="DOE", given_name="JANE", birth_date=date(1980, 2, 3), sex="F")
        session.add(patient)
        await session.flush()
        session.add(PatientIdentifier(patient_id=patient.id, system=MRN_SYSTEM, value=mrn, type_code="MR"))
        patient_id = patient.id
    return Seeded(patient_id, await add_task(db, patient_id, role, team), mrn)


async def add_task(
    db: AsyncEngine,
    patient_id: uuid.UUID,
    role: str,
    team: str,
    encounter_id: uuid.UUID | None = None,
    *,
    part2: bool = False,
) -> uuid.UUID:
    """An open task; `part2` is its 42 CFR Part 2 label (the pipeline sets it from a Part 2 encounter)."""
    async with AsyncSession(db) as session, session.begin():
        task = Task(
            dedupe_key=f"seed:{uuid.uuid4()}",
            type="post-discharge-contact",
            status="requested",
            priority="routine",
            role=role,
            team=team,
            patient_id=patient_id,
            encounter_id=encounter_id,
            part2=part2,
            due_at=datetime.now(UTC) + timedelta(days=7),
            due_basis={},
            rule_id="seed",
            rule_version="1",
            triggering_event_ids=[],
        )
        session.add(task)
        await session.flush()
        return task.id


async def attribute(db: AsyncEngine, patient_id: uuid.UUID, practice: str) -> None:
    """Active roster membership of the patient at `practice` (a team): puts them in that team's scope."""
    async with AsyncSession(db) as session, session.begin():
        roster = RosterImport(
            sender="ACO",
            format="csv",
            mapping="default",
            filename="seed.csv",
            checksum=uuid.uuid4().hex,
            source="cli",
            status="completed",
            as_of=date(2026, 11, 1),
        )
        session.add(roster)
        await session.flush()
        session.add(
            RosterMember(
                sender="ACO",
                member_id="M" + uuid.uuid4().hex[:10],
                patient_id=patient_id,
                status="active",
                row_hash="0" * 32,
                identifier_system=MRN_SYSTEM,
                identifier_value="x",
                practice=practice,
                bh_program=False,
                last_import_id=roster.id,
            )
        )
