"""What a person may do to a task: claim, release, assign, start, complete, cancel, or set a status.

Pure: given the task as it stands, who asks and what they asked, either the change to make or the
refusal (409 conflict, 412 stale version, 403 not allowed). Status moves go through the FHIR Task
state machine (app/tasks/lifecycle.py). Ownership rules:
- claim takes an unowned task; a task someone else owns is a 409 (two facilitators never both own it);
- release gives back your own task (a supervisor may release anyone's);
- assign (supervisors only) hands a task to a named user, replacing any owner;
- start, complete, cancel and other status moves are for the owner, or anyone on an unowned task
  (who thereby becomes its owner), or a supervisor.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from app.tasks.lifecycle import ACTIVE, TransitionError, check_transition


class Action(StrEnum):
    CLAIM = "claim"
    RELEASE = "release"
    ASSIGN = "assign"
    START = "start"
    COMPLETE = "complete"
    CANCEL = "cancel"
    SET_STATUS = "status"  # any other move the state machine allows (FHIR update: on-hold, ...)


class ActionRefused(Exception):
    def __init__(self, status: int, message: str, field: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


@dataclass(frozen=True, slots=True)
class TaskState:
    status: str
    owner: str | None
    version: int


@dataclass(frozen=True, slots=True)
class Request:
    action: Action
    actor: str  # the token's `sub`
    supervisor: bool
    if_match: int | None = None  # the version the caller last saw, from If-Match
    owner: str | None = None  # assign: the new owner
    status: str | None = None  # SET_STATUS: the target status
    outcome: str | None = None  # complete: what the work achieved
    reason: str | None = None  # cancel: why


@dataclass(frozen=True, slots=True)
class Change:
    status: str
    owner: str | None
    business_status: str | None  # None: leave as is
    changed: bool  # False: the request was already satisfied (claiming your own task)


TARGET_STATUS = {Action.START: "in-progress", Action.COMPLETE: "completed", Action.CANCEL: "cancelled"}


def decide(task: TaskState, request: Request) -> Change:
    """The change `request` makes to `task`, or ActionRefused."""
    if request.if_match is not None and request.if_match != task.version:
        raise ActionRefused(412, f"the task is at version {task.version}, not {request.if_match}", "If-Match")
    action = request.action
    if action in (Action.CLAIM, Action.ASSIGN) and task.status not in ACTIVE:
        raise ActionRefused(409, f"a {task.status} task cannot be {action.value}ed", "status")
    if action is Action.CLAIM:
        if task.owner not in (None, request.actor):
            raise ActionRefused(409, "the task is owned by someone else", "owner")
        return Change(task.status, request.actor, None, task.owner != request.actor)
    if action is Action.RELEASE:
        if task.owner is None:
            return Change(task.status, None, None, False)
        if task.owner != request.actor and not request.supervisor:
            raise ActionRefused(409, "only the owner or a supervisor may release the task", "owner")
        return Change(task.status, None, None, True)
    if action is Action.ASSIGN:
        if not request.supervisor:
            raise ActionRefused(403, "assigning tasks is for supervisors", "owner")
        if not request.owner:
            raise ActionRefused(422, "assign needs an owner", "owner")
        return Change(task.status, request.owner, None, task.owner != request.owner)
    target = request.status if action is Action.SET_STATUS else TARGET_STATUS[action]
    if target is None:
        raise ActionRefused(422, "a status is required", "status")
    if task.owner not in (None, request.actor) and not request.supervisor:
        raise ActionRefused(409, "the task is owned by someone else", "owner")
    try:
        check_transition(task.status, target)
    except TransitionError as exc:
        raise ActionRefused(409, str(exc), "status") from None
    business = request.outcome if action is Action.COMPLETE else request.reason if action is Action.CANCEL else None
    owner = task.owner if task.owner is not None else request.actor
    return Change(target, owner, business, True)


def parse_etag(value: str | None) -> int | None:
    """`W/"3"` or `"3"` -> 3; None when absent. `*` matches any version (None). Else ValueError."""
    if value is None or not value.strip() or value.strip() == "*":
        return None
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not text.isdigit() or len(text) > 9:
        raise ValueError(f"not an ETag this server issued: {value[:40]!r}")
    return int(text)


def etag(version: int) -> str:
    return f'W/"{version}"'
