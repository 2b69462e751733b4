"""`/ui/patients/{id}`: one patient's encounters, screenings, tasks and care plans, and the care plan
edit and PCP sign-off forms. Each section reads through the function its REST endpoint uses, so the
same scope, Part 2 gate and audit records apply; a section whose role or SMART scope the user lacks is
shown as not available rather than failing the page."""

from __future__ import annotations

import uuid
from typing import get_args

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.api import care_plans as plan_api
from app.api.audit import audit, request_line
from app.api.auth import Principal
from app.api.problems import Problem
from app.api.screenings import ScreeningOut, list_screenings
from app.api.tasks import page_request, worklist_filters, worklist_page
from app.careplans.model import (
    Achievement,
    ActivityStatus,
    CarePlanIn,
    CarePlanOut,
    CarePlanReplace,
    GoalStatus,
    PlanStatus,
)
from app.careplans.versioning import etag
from app.db.models import Encounter, Patient, utcnow
from app.fhir.routes import encounter_scope, newest_first_page
from app.settings import Settings
from app.state.audit import AuditAction, AuditOutcome
from app.tasks.lifecycle import ACTIVE, STATUSES, AttemptOutcome
from app.tasks.worklist import Order, SortKey
from app.ui.careplan_form import SECTIONS, plan_document
from app.ui.rendering import UiRoute, redirect, render, safe_next
from app.ui.session import UI_PATH, UiFormPrincipal, UiPrincipal, may, require_scope

router = APIRouter(prefix=UI_PATH, route_class=UiRoute, include_in_schema=False)
TIMELINE_LENGTH = 50  # encounters shown, newest first
BLANK_ROWS = 2  # spare rows per care plan section, for adding


async def _patient(request: Request, principal: Principal, patient_id: uuid.UUID) -> Patient:
    """The patient when in the caller's scope (the care plan API's check); audited as a Patient read."""
    settings: Settings = request.app.state.settings
    async with request.app.state.runtime.sessions() as session, session.begin():
        patient = await plan_api.visible_patient(session, principal, settings, patient_id)
        _audit_read(session, request, principal, "Patient", [patient_id], found=patient is not None)
    if patient is None:
        raise Problem(404, "Not Found", f"patient {patient_id} is not known", field="patient_id")
    return patient


def _audit_read(
    session: AsyncSession, request: Request, principal: Principal, what: str, ids: list[uuid.UUID], *, found: bool
) -> None:
    outcome = AuditOutcome.SUCCESS if found else AuditOutcome.MINOR_FAILURE
    audit(session, request, principal, action=AuditAction.READ, resource_type=what, patient_ids=ids, outcome=outcome)


async def _encounters(request: Request, principal: Principal, patient_id: uuid.UUID) -> list[Encounter] | None:
    """The FHIR Encounter search's scope (care roles; Part 2 stays hidden without consent), for one patient."""
    settings: Settings = request.app.state.settings
    if not principal.has_any_role(settings.care_roles) or not may(request, principal, "Encounter", "s"):
        return None
    conditions = [Encounter.patient_id == patient_id, *encounter_scope(principal, settings)]
    async with request.app.state.runtime.sessions() as session, session.begin():
        _, rows, _ = await newest_first_page(session, Encounter, conditions, None, TIMELINE_LENGTH)
        # the patient whose timeline was asked for, even when it is empty (what was looked at)
        audit(session, request, principal, action=AuditAction.READ, resource_type="Encounter", patient_ids=[patient_id])
    return sorted(rows, key=lambda e: e.admit_at or e.created_at, reverse=True)


async def _screenings(request: Request, principal: Principal, patient_id: uuid.UUID) -> list[ScreeningOut] | None:
    settings: Settings = request.app.state.settings
    if not principal.has_any_role(settings.care_roles) or not may(request, principal, "Observation", "s"):
        return None
    return (await list_screenings(patient_id, request, principal, status=None)).screenings


async def _plans(request: Request, principal: Principal, patient_id: uuid.UUID) -> list[CarePlanOut] | None:
    if not principal.roles or not may(request, principal, "CarePlan", "s"):
        return None
    return await plan_api.patient_care_plans(patient_id, request, principal)


def _editable(plan: CarePlanOut | None) -> dict[str, list[dict[str, object]]]:
    """Each section's rows for the form: the plan's, then spare blank ones."""
    rows: dict[str, list[dict[str, object]]] = {}
    for section in SECTIONS:
        items = [item.model_dump(mode="json") for item in getattr(plan, section)] if plan is not None else []
        for item in items:
            if "goal_ids" in item:
                item["goal_ids"] = ", ".join(item["goal_ids"])
        rows[section] = items + [{} for _ in range(BLANK_ROWS)]
    return rows


@router.get("/patients/{patient_id}", summary="One patient: timeline, screenings, tasks, care plan")
async def patient_page(request: Request, principal: UiPrincipal, patient_id: uuid.UUID) -> Response:
    settings: Settings = request.app.state.settings
    patient = await _patient(request, principal, patient_id)
    tasks = None
    if may(request, principal, "Task", "s"):
        filters = worklist_filters(
            principal, status=list(STATUSES), type_=None, team=None, owner=None, patient=[patient_id],
            due_before=None, due_after=None, overdue=None, due_soon=None,
        )  # fmt: skip
        page = page_request(request, SortKey.DUE, Order.DESC, settings.worklist_max_page_size, None)
        tasks = (await worklist_page(request, principal, filters, page, request_line(request))).items
    plans = await _plans(request, principal, patient_id)
    current = next((p for p in plans or [] if p.status not in ("completed", "revoked", "entered-in-error")), None)
    policy = plan_api.policy_from(settings)
    sign_off_state = None
    if current is not None and current.status == "active":
        activated = current.activated_at or current.created_at
        signed_at = current.sign_off.at if current.sign_off else None
        sign_off_state = (policy.state(activated, signed_at, utcnow()), policy.due_at(activated, signed_at))
    return render(
        request,
        "patient.html",
        {
            "patient": patient,
            "encounters": await _encounters(request, principal, patient_id),
            "screenings": await _screenings(request, principal, patient_id),
            "open_tasks": [t for t in tasks or [] if t["status"] in ACTIVE] if tasks is not None else None,
            "past_tasks": [t for t in tasks or [] if t["status"] not in ACTIVE] if tasks is not None else None,
            "plans": plans,
            "current": current,
            "rows": _editable(current),
            "sign_off_state": sign_off_state,
            "may_write": plan_api.may_write(principal, settings) and may(request, principal, "CarePlan", "u"),
            "may_create": plan_api.may_write(principal, settings) and may(request, principal, "CarePlan", "c"),
            "may_sign_off": plan_api.may_sign_off(principal, settings) and may(request, principal, "CarePlan", "u"),
            "attempt_outcomes": [o.value for o in AttemptOutcome],
            "active": ACTIVE,
            "plan_statuses": [s for s in get_args(PlanStatus) if s != "entered-in-error"],
            "goal_statuses": [s for s in get_args(GoalStatus) if s != "entered-in-error"],
            "achievements": ["", *get_args(Achievement)],
            "activity_statuses": [s for s in get_args(ActivityStatus) if s != "entered-in-error"],
        },
    )


def _plan_error(exc: ValidationError | Problem) -> str:
    if isinstance(exc, Problem):
        return exc.detail or exc.title
    first = exc.errors()[0]
    return f"{'.'.join(str(p) for p in first.get('loc', ()))}: {first.get('msg', 'not valid')}"


def _form_items(form: object) -> list[tuple[str, str]]:
    return [(k, v) for k, v in form.multi_items() if isinstance(v, str)]  # type: ignore[attr-defined]


@router.post("/patients/{patient_id}/care-plans", summary="Create a care plan")
async def create_plan(request: Request, principal: UiFormPrincipal, patient_id: uuid.UUID) -> Response:
    """Through the API's create function (app/api/care_plans.create_care_plan): its checks and audit."""
    require_scope(request, principal, "CarePlan", "c")
    back = f"{UI_PATH}/patients/{patient_id}"
    form = await request.form()
    try:
        body = CarePlanIn.model_validate(plan_document(_form_items(form)))
        await plan_api.create_care_plan(patient_id, body, request, Response(), principal)
    except (ValidationError, Problem) as exc:
        if isinstance(exc, Problem) and exc.status in (403, 404):
            raise
        return redirect(request, back, f"Care plan not created: {_plan_error(exc)}", "error")
    return redirect(request, back + "#care-plan", "Care plan created.")


@router.post("/care-plans/{care_plan_id}", summary="Save a care plan (the version read)")
async def update_plan(request: Request, principal: UiFormPrincipal, care_plan_id: uuid.UUID) -> Response:
    """Through the API's PUT function (If-Match: the version the form was rendered from)."""
    require_scope(request, principal, "CarePlan", "u")
    form = await request.form()
    back = safe_next(form.get("next"), f"{UI_PATH}/worklist")
    version = str(form.get("version") or "")
    try:
        body = CarePlanReplace.model_validate(plan_document(_form_items(form)))
        if_match = etag(int(version)) if version.isdigit() else None
        await plan_api.update_care_plan(care_plan_id, body, request, Response(), principal, if_match)
    except (ValidationError, Problem) as exc:
        if isinstance(exc, Problem) and exc.status in (403, 404):
            raise
        if isinstance(exc, Problem) and exc.status == 412:
            return redirect(request, back, "Not saved: someone changed this care plan after you opened it. "
                            "The page now shows the current version; make your change again.", "error")  # fmt: skip
        return redirect(request, back, f"Care plan not saved: {_plan_error(exc)}", "error")
    return redirect(request, back + "#care-plan", "Care plan saved.")


@router.post("/care-plans/{care_plan_id}/sign-off", summary="PCP sign-off of the version shown")
async def sign_off(request: Request, principal: UiFormPrincipal, care_plan_id: uuid.UUID) -> Response:
    require_scope(request, principal, "CarePlan", "u")
    form = await request.form()
    back = safe_next(form.get("next"), f"{UI_PATH}/worklist")
    version = str(form.get("version") or "")
    try:
        await plan_api.sign_off_care_plan(
            care_plan_id, request, Response(), principal, etag(int(version)) if version.isdigit() else None
        )
    except Problem as exc:
        if exc.status in (403, 404):
            raise
        return redirect(request, back, f"Not signed off: {_plan_error(exc)}", "error")
    return redirect(request, back + "#care-plan", "Care plan signed off.")
