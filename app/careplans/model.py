"""What a care plan holds (REST shape), with the checks pydantic alone cannot make.

Codes follow FHIR R4 so the FHIR mapping is lossless: plan status is CarePlan.status (request-status),
goal status Goal.lifecycleStatus, achievement Goal.achievementStatus (goal-achievement), activity status
CarePlan.activity.detail.status (care-plan-activity-status).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PlanStatus = Literal["draft", "active", "on-hold", "revoked", "completed", "entered-in-error"]
GoalStatus = Literal[
    "proposed", "planned", "accepted", "active", "on-hold", "completed", "cancelled", "entered-in-error", "rejected"
]
Achievement = Literal[
    "in-progress",
    "improving",
    "worsening",
    "no-change",
    "achieved",
    "sustaining",
    "not-achieved",
    "no-progress",
    "not-attainable",
]
ActivityStatus = Literal[
    "not-started",
    "scheduled",
    "in-progress",
    "on-hold",
    "completed",
    "cancelled",
    "stopped",
    "unknown",
    "entered-in-error",
]
LOCAL_ID = r"^[A-Za-z0-9\-.]{1,40}$"  # becomes part of a FHIR contained-resource id
MAX_ITEMS = 100


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Goal(_Strict):
    id: str | None = Field(default=None, pattern=LOCAL_ID, description="assigned by the server when absent")
    description: str = Field(min_length=1, max_length=1000, description="in the patient's words when patient-stated")
    patient_stated: bool = True
    target_date: date | None = None
    status: GoalStatus = "active"
    achievement: Achievement | None = None


class Activity(_Strict):
    id: str | None = Field(default=None, pattern=LOCAL_ID)
    description: str = Field(min_length=1, max_length=1000)
    status: ActivityStatus = "not-started"
    task_id: uuid.UUID | None = Field(default=None, description="the carecoord task that carries this activity out")
    goal_ids: list[str] = Field(default_factory=list, max_length=MAX_ITEMS)


class CareTeamMember(_Strict):
    name: str = Field(min_length=1, max_length=200)
    role: str = Field(min_length=1, max_length=100, description="e.g. PCP, BHCF, caregiver")
    reference: str | None = Field(
        default=None,
        max_length=200,
        pattern=r"^(Practitioner|PractitionerRole|RelatedPerson|Patient|Organization)/[A-Za-z0-9\-.]{1,64}$",
        description="FHIR reference to the member, when known",
    )


class PatientAction(_Strict):
    """Something the patient does for self-management (FHIR: an activity the patient performs)."""

    id: str | None = Field(default=None, pattern=LOCAL_ID)
    description: str = Field(min_length=1, max_length=1000)
    frequency: str | None = Field(default=None, max_length=200, description="free text, e.g. 'daily'")
    status: ActivityStatus = "in-progress"
    goal_ids: list[str] = Field(default_factory=list, max_length=MAX_ITEMS)


class CarePlanIn(_Strict):
    status: PlanStatus = "active"
    title: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=4000)
    period_start: date | None = None
    period_end: date | None = None
    goals: list[Goal] = Field(default_factory=list, max_length=MAX_ITEMS)
    activities: list[Activity] = Field(default_factory=list, max_length=MAX_ITEMS)
    care_team: list[CareTeamMember] = Field(default_factory=list, max_length=MAX_ITEMS)
    patient_actions: list[PatientAction] = Field(default_factory=list, max_length=MAX_ITEMS)


class SignOff(BaseModel):
    by: str
    at: datetime
    version: int = Field(description="the plan version the PCP signed")
    covers_current: bool = Field(description="false once the plan changed after the sign-off")


class CarePlanOut(CarePlanIn):
    model_config = ConfigDict(extra="ignore")

    # A stored plan may hold more activities than one writer may send: a writer who cannot see the
    # 42 CFR Part 2 activities sends up to MAX_ITEMS of their own, and the hidden ones are kept besides.
    activities: list[Activity] = Field(default_factory=list)

    id: uuid.UUID
    patient_id: uuid.UUID
    version: int
    sign_off: SignOff | None = None
    activated_at: datetime | None = None
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str


class CarePlanReplace(CarePlanIn):
    """A PUT body: the plan, optionally with the read-only fields of the plan as read (so a client may
    GET, edit and PUT back the same document); those are ignored, and `If-Match` names the version."""

    id: uuid.UUID | None = None
    patient_id: uuid.UUID | None = None
    version: int | None = None
    sign_off: SignOff | None = None
    activated_at: datetime | None = None
    created_at: datetime | None = None
    created_by: str | None = None
    updated_at: datetime | None = None
    updated_by: str | None = None

    def plan(self) -> CarePlanIn:
        return CarePlanIn.model_validate(self.model_dump(include=set(CarePlanIn.model_fields)))


@dataclass(frozen=True, slots=True)
class PlanError:
    """A problem with a submitted plan: `field` is the JSON path (e.g. `activities.1.goal_ids`)."""

    field: str
    message: str


def next_free_id(prefix: str, taken: set[str]) -> str:
    """The first `{prefix}{n}` (n = 1, 2, ...) not in `taken`."""
    n = 1
    while f"{prefix}{n}" in taken:
        n += 1
    return f"{prefix}{n}"


def assign_ids(plan: CarePlanIn) -> CarePlanIn:
    """Give every goal, activity and patient action a stable id (kept across versions once given)."""
    plan = plan.model_copy(deep=True)
    for prefix, items in (("g", plan.goals), ("a", plan.activities), ("p", plan.patient_actions)):
        taken = {item.id for item in items if item.id}
        for item in items:
            if not item.id:
                item.id = next_free_id(prefix, taken)
                taken.add(item.id)
    return plan


def check_plan(plan: CarePlanIn) -> list[PlanError]:
    """Cross-field rules: unique ids, goal links that resolve, a period that runs forwards."""
    errors: list[PlanError] = []
    if plan.period_start and plan.period_end and plan.period_end < plan.period_start:
        errors.append(PlanError("period_end", "must not be before period_start"))
    for name, items in (
        ("goals", plan.goals),
        ("activities", plan.activities),
        ("patient_actions", plan.patient_actions),
    ):
        seen: set[str] = set()
        for i, item in enumerate(items):
            if item.id and item.id in seen:
                errors.append(PlanError(f"{name}.{i}.id", f"duplicate id {item.id!r}"))
            if item.id:
                seen.add(item.id)
    goal_ids = {g.id for g in plan.goals if g.id}
    for name, linked in (("activities", plan.activities), ("patient_actions", plan.patient_actions)):
        for i, item in enumerate(linked):
            for gid in item.goal_ids:
                if gid not in goal_ids:
                    errors.append(PlanError(f"{name}.{i}.goal_ids", f"no goal with id {gid[:40]!r}"))
    task_ids = [a.task_id for a in plan.activities if a.task_id is not None]
    if len(task_ids) != len(set(task_ids)):
        errors.append(PlanError("activities", "a task may back only one activity"))
    return errors
