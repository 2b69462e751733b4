"""JSON shapes of the REST API (the FHIR API has its own, in app/fhir)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field

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
    business_status: str | None = Field(
        default=None,
        description="FHIR Task.businessStatus: a referral milestone; for a closed task its outcome or cancel reason",
    )
    rule: RuleRef
    triggering_event_ids: list[str]
    created_at: datetime
    updated_at: datetime
    version: int = Field(description='bumped by every change; the ETag is W/"<version>"')


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


class TriggeringScreening(BaseModel):
    """The screening a screening-raised task came from (its triggering event is the screening's id)."""

    event_id: str
    resource: str = Field(description="the source FHIR resource, `Observation/<id>` or `QuestionnaireResponse/<id>`")
    instrument: str
    score: int
    positive: bool
    status: str = Field(description="active, or retracted when its source was entered in error")
    effective_at: datetime
    received_at: datetime = Field(description="when the service recorded the screening")


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
    screenings: list[TriggeringScreening] = Field(
        default_factory=list, description="the screenings that raised the task (screening rules); empty otherwise"
    )
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


class WorklistPage(TaskList):
    """A worklist page: `count` is this page's size, `total` all matches (capped, see `total_exact`)."""

    total: int = Field(description="tasks matching the filters in the caller's scope, up to the configured cap")
    total_exact: bool = Field(description="false when the queue is larger than the cap and `total` is the cap")
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")
    sort: str
    order: str


class QueueSummaryRow(BaseModel):
    role: str
    team: str | None = Field(description="null: the unassigned pool (patients not yet attributed)")
    open: int
    due_today: int = Field(description="due on today's date on the facility clock")
    overdue: int
    unassigned: int = Field(description="open tasks nobody has claimed (no owner)")


class QueueSummary(BaseModel):
    as_of: datetime
    timezone: str
    queues: list[QueueSummaryRow]


def _no_nul(value: str) -> str:
    """Text the database can store: no NUL, valid UTF-8 (no lone surrogates)."""
    if "\x00" in value:
        raise ValueError("may not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


Text = Annotated[str, AfterValidator(_no_nul)]


class AssignIn(BaseModel):
    owner: Text = Field(min_length=1, max_length=255, description="the user (token `sub`) to own the task")


class CompleteIn(BaseModel):
    outcome: Text = Field(min_length=1, max_length=255, description="what the work achieved (FHIR businessStatus)")
    note: str | None = Field(default=None, max_length=2000)


class CancelIn(BaseModel):
    reason: Text = Field(min_length=1, max_length=255)
