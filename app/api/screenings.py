"""`GET /patients/{id}/screenings`: a patient's behavioral-health screening history.

One event per source resource (Observation or QuestionnaireResponse), newest first; retracted ones
(their source was entered-in-error or withdrawn) are listed with status `retracted` unless
`status=active` is asked for. Care roles may read screenings of patients in their scope (else 404, as
for an unknown patient); substance-use (Part 2) instruments only with the Part 2 permission and the
patient's consent, otherwise left out. Every read is audited with the patient id.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from sqlalchemy import select

from app.api.access import patient_in_scope, screening_part2_condition
from app.api.audit import audit
from app.api.auth import CurrentPrincipal
from app.api.problems import Problem
from app.api.scopes import scoped
from app.db.models import ScreeningEvent
from app.state.audit import AuditAction, AuditOutcome
from app.state.patients import patient_by_id

router = APIRouter(tags=["screenings"], dependencies=scoped("Observation"))


class ScreeningOut(BaseModel):
    id: uuid.UUID
    patient_id: uuid.UUID
    instrument: str
    score: int
    item9_score: int | None
    positive: bool
    threshold: int
    score_computed: bool
    effective_at: datetime
    status: str
    source: str  # "Observation/{id}" or "QuestionnaireResponse/{id}", readable under /fhir
    source_version: int
    recorded_at: datetime
    updated_at: datetime


class ScreeningList(BaseModel):
    patient_id: uuid.UUID
    screenings: list[ScreeningOut]


@router.get("/patients/{patient_id}/screenings", response_model=ScreeningList)
async def list_screenings(
    patient_id: uuid.UUID,
    request: Request,
    principal: CurrentPrincipal,
    status: Annotated[Literal["active", "retracted"] | None, Query(description="default: both")] = None,
) -> ScreeningList:
    settings = request.app.state.settings
    if not principal.has_any_role(settings.care_roles):
        raise Problem(403, "Forbidden", f"reading screenings requires one of the roles {settings.care_roles}")
    async with request.app.state.runtime.sessions() as session, session.begin():
        patient = await patient_by_id(session, patient_id)
        if patient is not None and not await patient_in_scope(session, principal, settings, patient.id):
            patient = None  # not the caller's patient: answered like an unknown one
        query = select(ScreeningEvent).where(
            ScreeningEvent.patient_id == (patient.id if patient else patient_id),
            screening_part2_condition(principal, settings),
        )
        if status is not None:
            query = query.where(ScreeningEvent.status == status)
        rows = (
            (
                await session.execute(
                    query.order_by(ScreeningEvent.effective_at.desc(), ScreeningEvent.recorded_at.desc())
                )
            )
            .scalars()
            .all()
        )
        audit(
            session,
            request,
            principal,
            action=AuditAction.READ,
            resource_type="ScreeningEvent",
            patient_ids=[patient_id],
            outcome=AuditOutcome.SUCCESS if patient else AuditOutcome.MINOR_FAILURE,
        )
    if patient is None:
        raise Problem(404, "Not found", f"no patient {patient_id}", field="patient_id")
    return ScreeningList(
        patient_id=patient.id,
        screenings=[
            ScreeningOut(
                id=r.id,
                patient_id=r.patient_id,
                instrument=r.instrument,
                score=r.score,
                item9_score=r.item9_score,
                positive=r.positive,
                threshold=r.threshold,
                score_computed=r.score_computed,
                effective_at=r.effective_at,
                status=r.status,
                source=f"{r.source_type}/{r.source_id}",
                source_version=r.source_version,
                recorded_at=r.recorded_at,
                updated_at=r.updated_at,
            )
            for r in rows
        ],
    )
