"""Recorded consents across an A40 merge.

A consent is the person's decision, so when two records turn out to be one person it follows them to the
survivor. Recording a consent supersedes the patient's earlier ones (app/api/consents.py), so after the
move the latest recorded consent of each scope decides. An older "active" one from the other record
must not outlive a later revocation: 42 CFR Part 2 data would show without the person's consent.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Consent
from app.fhir.consent import consent_resource


async def move_on_merge(session: AsyncSession, prior_id: uuid.UUID, survivor_id: uuid.UUID) -> None:
    moved = (await session.scalars(select(Consent).where(Consent.patient_id == prior_id))).all()
    if not moved:
        return
    for row in moved:
        row.patient_id = survivor_id
        # The stored FHIR Consent names its patient: it now names the survivor.
        row.resource = consent_resource(
            row.id,
            survivor_id,
            status=row.status,
            period_start=row.period_start,
            period_end=row.period_end,
            recorded_at=row.recorded_at,
        )
    await session.flush()
    newest_first = select(Consent).where(Consent.patient_id == survivor_id)
    held = (await session.scalars(newest_first.order_by(Consent.recorded_at.desc(), Consent.id.desc()))).all()
    latest: set[str] = set()
    for row in held:  # newest first: the first of each scope decides, every earlier one is superseded
        if row.scope in latest and row.status == "active":
            row.status = "inactive"
        latest.add(row.scope)
