"""`POST /patients/{id}/consents`: record a patient's 42 CFR Part 2 consent (or its revocation).

Only `consent_roles` may record, and only for a patient in their scope (else 404, as for an unknown
patient), counting Part 2 tasks too: the consent is what opens them. A new record supersedes the
patient's earlier Part 2 consents (they become `inactive`), so posting `status: inactive` revokes.
Every attempt is audited; the FHIR view is `GET /fhir/Consent`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Request
from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy import update

from app.api.access import PART2_CONSENT_SCOPE, patient_in_scope
from app.api.audit import AuditAction, AuditOutcome, audit
from app.api.auth import CurrentPrincipal
from app.api.problems import Problem
from app.api.scopes import scoped
from app.db.models import Consent, utcnow
from app.fhir.consent import consent_resource
from app.state.patients import patient_by_id

router = APIRouter(tags=["consents"], dependencies=scoped("Consent", interaction="c"))


class ConsentIn(BaseModel):
    scope: Literal["part2"] = Field(default="part2", description="what the consent permits: 42 CFR Part 2 disclosure")
    status: Literal["active", "inactive"] = Field(default="active", description="inactive records a revocation")
    period_start: AwareDatetime | None = Field(default=None, description="default: now")
    period_end: AwareDatetime | None = Field(default=None, description="open-ended when absent")


class ConsentOut(BaseModel):
    id: uuid.UUID
    patient_id: uuid.UUID
    scope: str
    status: str
    period_start: datetime
    period_end: datetime | None
    recorded_by: str
    recorded_at: datetime
    fhir: Annotated[str, Field(description="the FHIR Consent's path")]


@router.post("/patients/{patient_id}/consents", status_code=201, response_model=ConsentOut)
async def record_consent(
    patient_id: uuid.UUID, body: ConsentIn, request: Request, principal: CurrentPrincipal
) -> ConsentOut:
    settings = request.app.state.settings
    if not principal.has_any_role(settings.consent_roles):
        raise Problem(403, "Forbidden", f"recording consent requires one of the roles {settings.consent_roles}")
    now = utcnow()
    start = body.period_start or now
    if body.period_end is not None and body.period_end <= start:
        raise Problem(422, "Request is not valid", "period_end must be after period_start", field="period_end")
    row: Consent | None = None
    async with request.app.state.runtime.sessions() as session, session.begin():
        patient = await patient_by_id(session, patient_id)
        # A patient known to the caller only through Part 2 work is still theirs to record consent for.
        visible = patient is not None and await patient_in_scope(
            session, principal, settings, patient.id, part2_gate=False
        )
        if patient is not None and visible:
            await session.execute(
                update(Consent)
                .where(
                    Consent.patient_id == patient.id,
                    Consent.scope == PART2_CONSENT_SCOPE,
                    Consent.status == "active",
                )
                .values(status="inactive")
            )
            consent_id = uuid.uuid4()
            row = Consent(
                id=consent_id,
                patient_id=patient.id,
                scope=body.scope,
                status=body.status,
                period_start=start,
                period_end=body.period_end,
                recorded_by=principal.subject,
                recorded_at=now,
                resource=consent_resource(
                    consent_id,
                    patient.id,
                    status=body.status,
                    period_start=start,
                    period_end=body.period_end,
                    recorded_at=now,
                ),
            )
            session.add(row)
        audit(
            session,
            request,
            principal,
            action=AuditAction.CREATE,
            resource_type="Consent",
            patient_ids=[patient.id] if patient is not None else [patient_id],
            outcome=AuditOutcome.SUCCESS if row is not None else AuditOutcome.MINOR_FAILURE,
        )
    if row is None:
        raise Problem(404, "Not Found", f"no patient {patient_id}", field="patient_id")
    return ConsentOut(
        id=row.id,
        patient_id=row.patient_id,
        scope=row.scope,
        status=row.status,
        period_start=row.period_start,
        period_end=row.period_end,
        recorded_by=row.recorded_by,
        recorded_at=row.recorded_at,
        fhir=f"/fhir/Consent/{row.id}",
    )
