"""A task change as a CloudEvents 1.0 event in the JSON format, structured content mode of the Kafka
protocol binding (the whole event in the record value; the `partitionkey` extension is the record key).

Pure: the relay reads the change from the database and publishes what this returns."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/cloudevents+json; charset=UTF-8"
TYPE_PREFIX = "org.carecoord.task."
SOURCE = "/carecoord/tasks"


@dataclass(frozen=True, slots=True)
class TaskChange:
    """One task_history row and the task it changed. No free text (notes, reasons) and no patient
    identifiers travel: subscribers read details over the API, which checks scope and consent."""

    history_id: int
    at: datetime
    action: str
    actor: str
    from_status: str | None
    to_status: str | None
    task_id: uuid.UUID
    task_type: str
    rule_id: str
    patient_id: uuid.UUID | None
    encounter_id: uuid.UUID | None
    role: str
    team: str | None
    status: str
    business_status: str | None
    owner: str | None
    priority: str
    due_at: datetime
    version: int


def event_id(history_id: int) -> str:
    """Stable per change: a re-publish after a relay crash carries the same id, so subscribers dedupe on it."""
    return f"task-change-{history_id}"


def partition_key(change: TaskChange) -> bytes:
    """Keyed by patient, so one patient's task events stay in one partition, in order; a task without
    a patient (an operational task) is keyed by itself. The internal patient id is not an identifier
    anyone outside carecoord can resolve."""
    return str(change.patient_id or change.task_id).encode()


def to_cloudevent(change: TaskChange) -> dict[str, Any]:
    return {
        "specversion": SPEC_VERSION,
        "id": event_id(change.history_id),
        "source": SOURCE,
        "type": TYPE_PREFIX + change.action,
        "subject": str(change.task_id),
        "time": change.at.isoformat(),
        "datacontenttype": "application/json",
        "partitionkey": partition_key(change).decode(),
        "data": {
            # Order of changes: per task, `sequence` only grows (changes of one task are serialised by its row lock).
            "sequence": change.history_id,
            "change": {
                "action": change.action,
                "actor": change.actor,
                "from_status": change.from_status,
                "to_status": change.to_status,
            },
            # The task as it is when the relay reads it (the same as after the change unless a later change followed).
            "task": {
                "id": str(change.task_id),
                "type": change.task_type,
                "rule_id": change.rule_id,
                "patient_id": str(change.patient_id) if change.patient_id else None,
                "encounter_id": str(change.encounter_id) if change.encounter_id else None,
                "role": change.role,
                "team": change.team,
                "status": change.status,
                "business_status": change.business_status,
                "owner": change.owner,
                "priority": change.priority,
                "due_at": change.due_at.isoformat(),
                "version": change.version,
            },
        },
    }


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
