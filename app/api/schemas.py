"""JSON shapes of the REST API (the FHIR API has its own, in app/fhir)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel


class PatientSummary(BaseModel):
    id: uuid.UUID
    name: str | None
    birth_date: date | None


class RuleRef(BaseModel):
    id: str
    version: str


class TaskOut(BaseModel):
    id: uuid.UUID
    type: str
    status: str
    priority: str
    role: str
    team: str | None
    owner: str | None
    patient: PatientSummary | None  # None for operational tasks (e.g. a missing roster file)
    encounter_id: uuid.UUID | None
    due_at: datetime
    due_basis: dict[str, Any]
    rule: RuleRef
    triggering_event_ids: list[str]
    created_at: datetime
    updated_at: datetime
    version: int


class TaskList(BaseModel):
    items: list[TaskOut]
    count: int


class IngestAccepted(BaseModel):
    event_id: uuid.UUID
    topic: str
    partition: int
    offset: int
