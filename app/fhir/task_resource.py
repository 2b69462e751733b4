"""carecoord tasks as FHIR R4 Task resources, and what a FHIR update of one asks for.

Mapping (docs/worklists.md):
- `status` the task status (http://hl7.org/fhir/task-status), `intent` "order", `priority` the
  request-priority code; `code` the task type in the configured CodeSystem (fhir_task_type_system);
- `for` Patient/{id}, `encounter` Encounter/{id}; `authoredOn` created, `lastModified` last change;
- `owner` the user by identifier (fhir_user_system | token `sub`), typed Practitioner;
- `restriction.period.end` the due time; `businessStatus.text` the outcome or cancel reason;
- `meta.versionId` the row version (the ETag's number), `meta.lastUpdated` the last change.

An update (PUT, or PATCH turned into the resulting resource) may change `status` and `owner` only,
with `businessStatus` / `statusReason` carrying a completion's outcome or a cancel's reason. Any other
difference from the stored resource is refused (UpdateError -> 422 OperationOutcome naming it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.db.models import Task
from app.tasks.actions import Action, Request

TASK_STATUS_SYSTEM = "http://hl7.org/fhir/task-status"
OWNER_TYPE = "Practitioner"
EDITABLE = ("status", "owner", "businessStatus", "statusReason")
SERVER_MANAGED = ("meta", "text", "lastModified")  # ignored in an update: the server sets them


def instant(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def task_resource(task: Task, *, type_system: str, user_system: str) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Task",
        "id": str(task.id),
        "meta": {"versionId": str(task.version), "lastUpdated": instant(task.updated_at)},
        "status": task.status,
    }
    if task.business_status:
        resource["businessStatus"] = {"text": task.business_status}
    resource |= {
        "intent": "order",
        "priority": task.priority,
        "code": {"coding": [{"system": type_system, "code": task.type}], "text": task.type},
    }
    if task.patient_id is not None:
        resource["for"] = {"reference": f"Patient/{task.patient_id}"}
    if task.encounter_id is not None:
        resource["encounter"] = {"reference": f"Encounter/{task.encounter_id}"}
    resource |= {"authoredOn": instant(task.created_at), "lastModified": instant(task.updated_at)}
    if task.owner is not None:
        resource["owner"] = owner_reference(task.owner, user_system)
    resource["restriction"] = {"period": {"end": instant(task.due_at)}}
    return resource


def owner_reference(owner: str, user_system: str) -> dict[str, Any]:
    return {"type": OWNER_TYPE, "identifier": {"system": user_system, "value": owner}, "display": owner}


class UpdateError(ValueError):
    def __init__(self, message: str, expressions: list[str]) -> None:
        super().__init__(message)
        self.message = message
        self.expressions = expressions


def owner_of(reference: Any, user_system: str) -> str | None:
    """The user a Task.owner Reference names: identifier (our user system) or `Practitioner/{sub}`."""
    if reference is None:
        return None
    if not isinstance(reference, dict):
        raise UpdateError("owner must be a Reference", ["Task.owner"])
    identifier = reference.get("identifier")
    if isinstance(identifier, dict) and identifier.get("value"):
        if identifier.get("system") not in (None, user_system):
            raise UpdateError(f"owner.identifier.system must be {user_system}", ["Task.owner.identifier.system"])
        return str(identifier["value"])
    ref = reference.get("reference")
    if isinstance(ref, str) and ref.startswith(f"{OWNER_TYPE}/") and len(ref) > len(OWNER_TYPE) + 1:
        return ref[len(OWNER_TYPE) + 1 :]
    raise UpdateError("owner must name a user by identifier or Practitioner/{id}", ["Task.owner"])


def _text(concept: Any) -> str | None:
    if not isinstance(concept, dict):
        return None
    if concept.get("text"):
        return str(concept["text"])
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and (coding.get("display") or coding.get("code")):
            return str(coding.get("display") or coding.get("code"))
    return None


@dataclass(frozen=True, slots=True)
class Wanted:
    status: str
    owner: str | None
    outcome: str | None
    reason: str | None


def wanted_changes(current: dict[str, Any], proposed: Any, *, resource_id: str, user_system: str) -> Wanted:
    """What an update asks for, or UpdateError if it changes anything but status and owner."""
    if not isinstance(proposed, dict) or proposed.get("resourceType") != "Task":
        raise UpdateError("the body must be a Task resource", ["Task"])
    text = json.dumps(proposed, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UpdateError("the resource is not valid Unicode text", ["Task"]) from None
    if "\\u0000" in text:
        raise UpdateError("NUL characters are not allowed", ["Task"])
    if proposed.get("id") != resource_id:
        raise UpdateError("the resource id must match the URL", ["Task.id"])
    ignored = (*EDITABLE, *SERVER_MANAGED)
    keys = (set(current) | set(proposed)) - set(ignored)
    changed = sorted(k for k in keys if current.get(k) != proposed.get(k))
    if changed:
        raise UpdateError(
            f"only status and owner may change; also changed: {', '.join(changed)}", [f"Task.{k}" for k in changed]
        )
    status = proposed.get("status")
    if not isinstance(status, str):
        raise UpdateError("status is required", ["Task.status"])
    return Wanted(
        status=status,
        owner=owner_of(proposed.get("owner"), user_system),
        outcome=_text(proposed.get("businessStatus")),
        reason=_text(proposed.get("statusReason")) or _text(proposed.get("businessStatus")),
    )


def action_requests(*, status: str, owner: str | None, wanted: Wanted, actor: str, supervisor: bool) -> list[Request]:
    """The task actions that turn (status, owner) into what the update wants: ownership first, then
    the status move, so "claim and start" in one update works."""
    requests: list[Request] = []

    def make(action: Action, **extra: Any) -> Request:
        return Request(action=action, actor=actor, supervisor=supervisor, **extra)

    if wanted.owner != owner:
        if wanted.owner is None:
            requests.append(make(Action.RELEASE))
        elif wanted.owner == actor and (owner is None or not supervisor):
            requests.append(make(Action.CLAIM))
        else:
            requests.append(make(Action.ASSIGN, owner=wanted.owner))
    if wanted.status != status:
        if wanted.status == "in-progress":
            requests.append(make(Action.START))
        elif wanted.status == "completed":
            requests.append(make(Action.COMPLETE, outcome=wanted.outcome))
        elif wanted.status == "cancelled":
            requests.append(make(Action.CANCEL, reason=wanted.reason))
        else:
            requests.append(make(Action.SET_STATUS, status=wanted.status))
    return requests
