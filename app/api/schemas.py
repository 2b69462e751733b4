"""JSON shapes of the REST API (the FHIR API has its own, in app/fhir)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, Field

from app.tasks.lifecycle import AttemptOutcome, Timeliness


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
    timeliness: Timeliness | None = Field(description="open tasks: on-time, due-soon or overdue")
    escalated_at: datetime | None = Field(description="when the escalation job found it overdue")
    failed_attempts: int
    rule: RuleRef
    triggering_event_ids: list[str]
    created_at: datetime
    updated_at: datetime
    version: int
    business_status: str | None = Field(
        default=None, description="FHIR Task.businessStatus of a referral loop (requested ... summary-received)"
    )


class TaskList(BaseModel):
    items: list[TaskOut]
    count: int


class IngestAccepted(BaseModel):
    event_id: uuid.UUID
    topic: str
    partition: int
    offset: int


class TriggeringEvent(BaseModel):
    event_id: str
    source: str | None
    message_type: str | None
    event_time: datetime | None
    received_at: datetime | None


class HistoryEntry(BaseModel):
    at: datetime
    actor: str
    action: str
    from_status: str | None
    to_status: str | None
    detail: dict[str, Any]


class TaskExplanation(BaseModel):
    """Why a task exists, who it went to and why, and what has happened to it since."""

    task_id: uuid.UUID
    type: str
    status: str
    rule: RuleRef
    rule_description: str | None = Field(description="from the rules file now loaded; null if the rule was removed")
    rule_version_current: bool = Field(description="the task was raised by the version of the rule now loaded")
    triggering_events: list[TriggeringEvent]
    due_at: datetime
    due_basis: dict[str, Any]
    route_basis: dict[str, Any] | None
    supersedes: list[uuid.UUID] = Field(
        default_factory=list, description="earlier stays' tasks of the same rule this readmission's task replaces"
    )
    superseded_by_encounter_id: uuid.UUID | None = Field(description="the readmission that superseded this task")
    history: list[HistoryEntry]


class AttemptIn(BaseModel):
    outcome: AttemptOutcome
    note: str | None = Field(default=None, max_length=2000, description="kept in the task history; no PHI in logs")
