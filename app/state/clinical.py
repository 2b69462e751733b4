"""Stored FHIR clinical resources (conditional create by identity), the Questionnaire registry and
screening events."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import FhirResource, QuestionnaireDefinitionRow, ScreeningEvent, utcnow
from app.screening.scoring import QuestionnaireDefinition, ScreeningResult

ACTIVE = "active"
RETRACTED = "retracted"


def identity_hash(identity: str) -> str:
    return hashlib.sha256(identity.encode()).hexdigest()


async def store_resource(
    session: AsyncSession,
    *,
    resource_type: str,
    identity: str,
    content: dict[str, Any],
    content_hash: str,
    status: str,
    patient_id: uuid.UUID | None,
    code: str | None = None,
    effective_at: datetime | None = None,
    awaiting_questionnaire: str | None = None,
) -> FhirResource:
    """Conditional create on identity: the first one creates the row, later content makes a new version."""
    key = identity_hash(identity)
    row = (
        await session.execute(
            select(FhirResource)
            .where(FhirResource.resource_type == resource_type, FhirResource.identity_hash == key)
            .with_for_update()
        )
    ).scalar_one_or_none()
    if row is None:
        row = FhirResource(resource_type=resource_type, identity_hash=key, version=1)
        session.add(row)
    elif row.content_hash != content_hash:
        row.version += 1
    row.content = content
    row.content_hash = content_hash
    row.status = status
    row.patient_id = patient_id
    row.code = code
    row.effective_at = effective_at
    row.awaiting_questionnaire = awaiting_questionnaire
    await session.flush()
    return row


async def register_questionnaire(session: AsyncSession, row: FhirResource, definition: QuestionnaireDefinition) -> None:
    entry = (
        await session.execute(
            select(QuestionnaireDefinitionRow).where(
                QuestionnaireDefinitionRow.url == definition.url,
                QuestionnaireDefinitionRow.version == definition.version,
            )
        )
    ).scalar_one_or_none()
    if entry is None:
        entry = QuestionnaireDefinitionRow(url=definition.url, version=definition.version)
        session.add(entry)
    entry.resource_id = row.id
    entry.instrument = definition.instrument.value
    entry.definition = definition.to_json()


async def responses_awaiting(session: AsyncSession, url: str) -> list[FhirResource]:
    """QuestionnaireResponses stored before the Questionnaire at `url` was registered."""
    query = select(FhirResource).where(FhirResource.awaiting_questionnaire == url).with_for_update()
    return list((await session.execute(query)).scalars().all())


async def find_questionnaire(session: AsyncSession, url: str, version: str | None) -> QuestionnaireDefinition | None:
    """`url|version` exactly; a bare `url` means its most recently registered version."""
    query = select(QuestionnaireDefinitionRow.definition).where(QuestionnaireDefinitionRow.url == url)
    if version is not None:
        query = query.where(QuestionnaireDefinitionRow.version == version)
    query = query.order_by(QuestionnaireDefinitionRow.updated_at.desc()).limit(1)
    found = await session.scalar(query)
    return QuestionnaireDefinition.from_json(found) if found is not None else None


async def record_screening(
    session: AsyncSession,
    source: FhirResource,
    result: ScreeningResult | None,
    effective_at: datetime | None,
) -> ScreeningEvent | None:
    """One event per source resource: a result creates or updates it (amended, corrected); no result
    (entered-in-error, cancelled, ...) retracts it. Returns the event, if there is one."""
    event = (
        await session.execute(select(ScreeningEvent).where(ScreeningEvent.source_id == source.id).with_for_update())
    ).scalar_one_or_none()
    if result is None or effective_at is None:
        if event is not None and event.status != RETRACTED:
            event.status = RETRACTED
            event.source_version = source.version
            event.updated_at = utcnow()
        return event
    assert source.patient_id is not None
    if event is None:
        event = ScreeningEvent(source_id=source.id, source_type=source.resource_type)
        session.add(event)
    event.patient_id = source.patient_id
    event.instrument = result.instrument.value
    event.score = result.score
    event.item9_score = result.item9
    event.positive = result.positive
    event.threshold = result.threshold
    event.score_computed = result.computed
    event.effective_at = effective_at
    event.status = ACTIVE
    event.source_version = source.version
    return event
