"""Care plan <-> FHIR R4 CarePlan (pure mapping; validated with fhir.resources' R4B models).

Mapping (docs/care-plans.md):
- goals -> contained `Goal` resources (`#goal-{id}`) listed in `CarePlan.goal`: a goal exists only
  inside its plan here, so it is contained rather than a separate Goal endpoint. Patient-stated goals
  have `expressedBy` = the patient; `target[0].dueDate` is the target date; `lifecycleStatus` and
  `achievementStatus` (goal-achievement) carry the status.
- care team -> one contained `CareTeam` (`#careteam`) in `CarePlan.careTeam`; each member is a
  participant with `role[0].text` and `member` (reference when known, display = name).
- activities linked to a task -> `activity.reference` = `Task/{id}` (display = description). R4 cpl-3
  forbids `detail` beside `reference`, so the activity status and goal links ride in extensions.
  Other activities -> `activity.detail` (status, description, goal).
- patient actions (self-management) -> `activity.detail` with `performer` = the patient and the
  frequency as `scheduledString`.
- PCP sign-off -> the `pcp-sign-off` extension (signer, signedAt, version signed, coversCurrent).
  R4 has no sign-off element; `author` is who is responsible for the plan, not who approved it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

from fhir.resources.R4B.careplan import CarePlan as FhirCarePlan
from pydantic import ValidationError

from app.careplans.model import CarePlanIn, CarePlanOut

EXT_BASE = "urn:carecoord:fhir:extension:"
SIGN_OFF_EXT = EXT_BASE + "pcp-sign-off"
ACTIVITY_STATUS_EXT = EXT_BASE + "activity-status"
ACTIVITY_GOAL_EXT = EXT_BASE + "activity-goal"
GOAL_ACHIEVEMENT_SYSTEM = "http://terminology.hl7.org/CodeSystem/goal-achievement"
GOAL_PREFIX = "goal-"
CARE_TEAM_ID = "careteam"
INTENT = "plan"


class CarePlanMappingError(ValueError):
    """A submitted CarePlan carecoord cannot take: `expression` is the FHIRPath of the element."""

    def __init__(self, expression: str, message: str) -> None:
        super().__init__(f"{expression}: {message}")
        self.expression = expression
        self.message = message


def _instant(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _goal_ref(goal_id: str) -> dict[str, str]:
    return {"reference": f"#{GOAL_PREFIX}{goal_id}"}


def careplan_resource(plan: CarePlanOut) -> dict[str, Any]:
    patient = {"reference": f"Patient/{plan.patient_id}"}
    resource: dict[str, Any] = {
        "resourceType": "CarePlan",
        "id": str(plan.id),
        "meta": {"versionId": str(plan.version), "lastUpdated": _instant(plan.updated_at)},
        "status": plan.status,
        "intent": INTENT,
        "subject": patient,
        "created": _instant(plan.created_at),
    }
    if plan.title:
        resource["title"] = plan.title
    if plan.description:
        resource["description"] = plan.description
    period = {k: v.isoformat() for k, v in (("start", plan.period_start), ("end", plan.period_end)) if v}
    if period:
        resource["period"] = period
    contained: list[dict[str, Any]] = []
    for goal in plan.goals:
        contained_goal: dict[str, Any] = {
            "resourceType": "Goal",
            "id": f"{GOAL_PREFIX}{goal.id}",
            "lifecycleStatus": goal.status,
            "description": {"text": goal.description},
            "subject": patient,
        }
        if goal.achievement:
            contained_goal["achievementStatus"] = {
                "coding": [{"system": GOAL_ACHIEVEMENT_SYSTEM, "code": goal.achievement}]
            }
        if goal.target_date:
            contained_goal["target"] = [{"dueDate": goal.target_date.isoformat()}]
        if goal.patient_stated:
            contained_goal["expressedBy"] = patient
        contained.append(contained_goal)
    if plan.care_team:
        contained.append(
            {
                "resourceType": "CareTeam",
                "id": CARE_TEAM_ID,
                "status": "active",
                "subject": patient,
                "participant": [
                    {
                        "role": [{"text": m.role}],
                        "member": {"display": m.name} | ({"reference": m.reference} if m.reference else {}),
                    }
                    for m in plan.care_team
                ],
            }
        )
        resource["careTeam"] = [{"reference": f"#{CARE_TEAM_ID}"}]
    if contained:
        resource["contained"] = contained
    if plan.goals:
        resource["goal"] = [_goal_ref(g.id or "") for g in plan.goals]
    activities: list[dict[str, Any]] = []
    for act in plan.activities:
        if act.task_id is not None:
            extensions = [{"url": ACTIVITY_STATUS_EXT, "valueCode": act.status}]
            extensions += [{"url": ACTIVITY_GOAL_EXT, "valueReference": _goal_ref(g)} for g in act.goal_ids]
            activities.append(
                {
                    "id": act.id,
                    "extension": extensions,
                    "reference": {"reference": f"Task/{act.task_id}", "display": act.description},
                }
            )
        else:
            detail: dict[str, Any] = {"status": act.status, "description": act.description}
            if act.goal_ids:
                detail["goal"] = [_goal_ref(g) for g in act.goal_ids]
            activities.append({"id": act.id, "detail": detail})
    for action in plan.patient_actions:
        detail = {"status": action.status, "description": action.description, "performer": [patient]}
        if action.goal_ids:
            detail["goal"] = [_goal_ref(g) for g in action.goal_ids]
        if action.frequency:
            detail["scheduledString"] = action.frequency
        activities.append({"id": action.id, "detail": detail})
    if activities:
        resource["activity"] = activities
    if plan.sign_off is not None:
        resource["extension"] = [
            {
                "url": SIGN_OFF_EXT,
                "extension": [
                    {"url": "signer", "valueString": plan.sign_off.by},
                    {"url": "signedAt", "valueDateTime": _instant(plan.sign_off.at)},
                    {"url": "version", "valueInteger": plan.sign_off.version},
                    {"url": "coversCurrent", "valueBoolean": plan.sign_off.covers_current},
                ],
            }
        ]
    return resource


def validated(resource: dict[str, Any]) -> dict[str, Any]:
    """Every CarePlan we serve passes fhir.resources (a failure is our bug, not the caller's)."""
    FhirCarePlan.model_validate(resource)
    return resource


# --- FHIR -> care plan --------------------------------------------------------------------------


def _local_goal_id(reference: str, where: str) -> str:
    if not reference.startswith(f"#{GOAL_PREFIX}"):
        raise CarePlanMappingError(where, "goals must reference a contained Goal (#goal-...)")
    return reference[len(GOAL_PREFIX) + 1 :]


def _concept_text(concept: dict[str, Any]) -> str:
    """A CodeableConcept as words: its text, else the first coding's display."""
    displays = [c.get("display") for c in concept.get("coding") or [] if c.get("display")]
    return concept.get("text") or (displays[0] if displays else "")


def _date(value: Any, where: str) -> date | None:
    """A FHIR date or dateTime as a calendar day; a partial date (`2027`, `2027-03`) has no single day."""
    if value is None:
        return None
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        raise CarePlanMappingError(where, "a full date (YYYY-MM-DD) is required") from None


def subject_patient_id(resource: dict[str, Any]) -> uuid.UUID:
    reference = ((resource.get("subject") or {}).get("reference") or "").strip()
    kind, _, ident = reference.rpartition("/")
    if not kind.endswith("Patient"):
        raise CarePlanMappingError("CarePlan.subject", "must reference a Patient (Patient/{id})")
    try:
        return uuid.UUID(ident)
    except ValueError:
        raise CarePlanMappingError("CarePlan.subject", "no patient with this id") from None


def careplan_from_fhir(resource: dict[str, Any]) -> CarePlanIn:
    """A client's CarePlan as a plan to store; the shape the server writes is read back losslessly."""
    if resource.get("resourceType") != "CarePlan":
        raise CarePlanMappingError("resourceType", "must be CarePlan")
    try:
        FhirCarePlan.model_validate(resource)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "CarePlan." + ".".join(str(p) for p in first["loc"] if p != "__root__")
        raise CarePlanMappingError(where.rstrip("."), first["msg"]) from None
    except (ValueError, TypeError, LookupError) as exc:  # a validator that failed outside pydantic's wrapping
        raise CarePlanMappingError("CarePlan", f"not a valid CarePlan: {type(exc).__name__}") from None
    if resource.get("intent") != INTENT:
        raise CarePlanMappingError("CarePlan.intent", f"only intent {INTENT!r} is supported")
    contained = {c.get("id"): c for c in resource.get("contained") or []}
    goals = []
    for i, ref in enumerate(resource.get("goal") or []):
        where = f"CarePlan.goal[{i}]"
        goal = contained.get(GOAL_PREFIX + _local_goal_id(ref.get("reference") or "", where))
        if goal is None or goal.get("resourceType") != "Goal":
            raise CarePlanMappingError(where, "no contained Goal with this id")
        target = (goal.get("target") or [{}])[0]
        achievement = [c.get("code") for c in (goal.get("achievementStatus") or {}).get("coding") or []]
        goals.append(
            {
                "id": goal["id"][len(GOAL_PREFIX) :],
                "description": _concept_text(goal.get("description") or {}),
                "patient_stated": bool((goal.get("expressedBy") or {}).get("reference", "").startswith("Patient")),
                "target_date": _date(target.get("dueDate"), f"{where}.target[0].dueDate"),
                "status": goal.get("lifecycleStatus"),
                "achievement": achievement[0] if achievement else None,
            }
        )
    care_team = []
    for i, ref in enumerate(resource.get("careTeam") or []):
        team = contained.get((ref.get("reference") or "").removeprefix("#"))
        if team is None or team.get("resourceType") != "CareTeam":
            raise CarePlanMappingError(f"CarePlan.careTeam[{i}]", "must reference a contained CareTeam")
        for participant in team.get("participant") or []:
            member = participant.get("member") or {}
            role = ((participant.get("role") or [{}])[0]).get("text") or ""
            entry: dict[str, Any] = {"name": member.get("display") or member.get("reference") or "", "role": role}
            if member.get("reference"):
                entry["reference"] = member["reference"]
            care_team.append(entry)
    activities: list[dict[str, Any]] = []
    actions: list[dict[str, Any]] = []
    where_is: dict[str, list[int]] = {"activities": [], "patient_actions": []}  # REST list index -> FHIR activity index
    for i, act in enumerate(resource.get("activity") or []):
        where = f"CarePlan.activity[{i}]"
        if act.get("reference"):
            kind, _, ident = (act["reference"].get("reference") or "").rpartition("/")
            if not kind.endswith("Task"):
                raise CarePlanMappingError(where + ".reference", "only Task references are supported")
            try:
                task_id = uuid.UUID(ident)
            except ValueError:
                raise CarePlanMappingError(where + ".reference", "no task with this id") from None
            extensions = act.get("extension") or []
            status = next((e.get("valueCode") for e in extensions if e.get("url") == ACTIVITY_STATUS_EXT), None)
            goal_ids = [
                _local_goal_id((e.get("valueReference") or {}).get("reference") or "", where)
                for e in extensions
                if e.get("url") == ACTIVITY_GOAL_EXT
            ]
            where_is["activities"].append(i)
            activities.append(
                {
                    "id": act.get("id"),
                    "description": act["reference"].get("display") or "Task",
                    "status": status or "unknown",
                    "task_id": task_id,
                    "goal_ids": goal_ids,
                }
            )
            continue
        detail = act.get("detail") or {}
        goal_ids = [_local_goal_id(g.get("reference") or "", where) for g in detail.get("goal") or []]
        item: dict[str, Any] = {
            "id": act.get("id"),
            "description": detail.get("description") or "",
            "status": detail.get("status"),
            "goal_ids": goal_ids,
        }
        by_patient = any((p.get("reference") or "").startswith("Patient/") for p in detail.get("performer") or [])
        if by_patient:
            item["frequency"] = detail.get("scheduledString")
            where_is["patient_actions"].append(i)
            actions.append(item)
        else:
            where_is["activities"].append(i)
            activities.append(item)
    period = resource.get("period") or {}
    try:
        return CarePlanIn.model_validate(
            {
                "status": resource.get("status"),
                "title": resource.get("title"),
                "description": resource.get("description"),
                "period_start": _date(period.get("start"), "CarePlan.period.start"),
                "period_end": _date(period.get("end"), "CarePlan.period.end"),
                "goals": goals,
                "activities": activities,
                "care_team": care_team,
                "patient_actions": actions,
            }
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise CarePlanMappingError(_fhir_path(first["loc"], where_is), first["msg"]) from None


_TOP_LEVEL = {
    "status": "CarePlan.status",
    "title": "CarePlan.title",
    "description": "CarePlan.description",
    "period_start": "CarePlan.period.start",
    "period_end": "CarePlan.period.end",
    "care_team": "CarePlan.careTeam",
}


def _fhir_path(loc: tuple[Any, ...], where_is: dict[str, list[int]]) -> str:
    """A REST field path (pydantic's loc) as the FHIR element it came from."""
    head = str(loc[0]) if loc else ""
    index = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else None
    if head == "goals" and index is not None:
        return f"CarePlan.goal[{index}]"
    if head in where_is and index is not None and index < len(where_is[head]):
        return f"CarePlan.activity[{where_is[head][index]}]"
    return _TOP_LEVEL.get(head, "CarePlan")
