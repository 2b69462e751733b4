"""Put seeded patients in a caller's scope (a task in a role's queue) and record Part 2 consents,
straight in the database, for tests about what an endpoint returns rather than how tasks arise."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.db.models import Consent, Patient, Task, utcnow
from app.fhir.consent import consent_resource


def scope_task(patient_id: uuid.UUID, role: str = "PMC", team: str | None = None, **columns: object) -> Task:
    """A task that puts the patient in `role`'s (and `team`'s) scope."""
    values: dict[str, object] = {
        "dedupe_key": f"test-scope|{uuid.uuid4()}",
        "type": "post-discharge-contact",
        "status": "ready",
        "priority": "routine",
        "role": role,
        "team": team,
        "patient_id": patient_id,
        "due_at": datetime(2026, 12, 1, tzinfo=UTC),
        "due_basis": {},
        "rule_id": "test",
        "rule_version": "1",
        "triggering_event_ids": [],
    }
    values.update(columns)
    return Task(**values)


async def in_scope(db: AsyncEngine, patient_id: uuid.UUID, role: str = "PMC", team: str | None = None) -> Task:
    async with AsyncSession(db, expire_on_commit=False) as session, session.begin():
        task = scope_task(patient_id, role, team)
        session.add(task)
    return task


async def record_consent(db: AsyncEngine, patient_id: uuid.UUID, *, status: str = "active", days: int = 365) -> None:
    now = utcnow()
    start, end = now - timedelta(days=1), now + timedelta(days=days)
    consent_id = uuid.uuid4()
    async with AsyncSession(db) as session, session.begin():
        session.add(
            Consent(
                id=consent_id,
                patient_id=patient_id,
                scope="part2",
                status=status,
                period_start=start,
                period_end=end,
                recorded_by="test",
                recorded_at=now,
                resource=consent_resource(
                    consent_id, patient_id, status=status, period_start=start, period_end=end, recorded_at=now
                ),
            )
        )


async def everyone_in_scope(db: AsyncEngine, role: str = "PMC") -> None:
    """A scope task for each patient that has none of `role` yet: for tests that read back what the
    pipeline stored, whatever the rules raised."""
    async with AsyncSession(db) as session, session.begin():
        covered = select(Task.patient_id).where(Task.role == role, Task.rule_id == "test")
        patients = (await session.execute(select(Patient.id).where(Patient.id.not_in(covered)))).scalars().all()
        session.add_all(scope_task(p, role) for p in patients)
