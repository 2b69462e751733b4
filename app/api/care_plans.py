"""Care plans over REST: one active plan per patient, versioned with ETag/If-Match, PCP sign-off.

Access (docs/care-plans.md): a plan is visible to callers for whom its patient is in scope
(app/api/access.py patient_condition); writes need a facilitator role (`care_plan_writer_roles`) or a
supervisor role; sign-off needs a PCP role (`pcp_roles`). Hidden plans and patients answer 404.
Every read and write is audited.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, not_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from app.api.access import is_supervisor, part2_condition, patient_condition, patient_id_condition, task_part2_label
from app.api.audit import audit
from app.api.auth import CurrentPrincipal, Principal
from app.api.problems import Problem
from app.api.scopes import scoped
from app.careplans.model import CarePlanIn, CarePlanOut, CarePlanReplace, PlanError, assign_ids, check_plan
from app.careplans.signoff import SignOffPolicy, SignOffState
from app.careplans.versioning import PreconditionError, check_if_match, etag
from app.db.models import Patient, Task, utcnow
from app.settings import Settings
from app.state import care_plans as store
from app.state.audit import AuditAction, AuditOutcome

router = APIRouter(tags=["care plans"])
RESOURCE = "CarePlan"
MAX_DUE_LIST = 500


class CarePlanVersionOut(BaseModel):
    version: int
    recorded_at: datetime
    actor: str
    action: str
    plan: CarePlanOut


class SignOffDueItem(BaseModel):
    plan: CarePlanOut
    due_at: datetime
    state: SignOffState


class SignOffDueList(BaseModel):
    items: list[SignOffDueItem]
    count: int = Field(description="items returned (at most `limit`)")


def policy_from(settings: Settings) -> SignOffPolicy:
    return SignOffPolicy(
        settings.care_plan_sign_off_due_days,
        settings.care_plan_sign_off_renewal_days,
        settings.care_plan_sign_off_due_soon_days,
    )


def facility_zone(settings: Settings) -> ZoneInfo:
    """Engagement dates (status file) are calendar days where the care team works."""
    return ZoneInfo(settings.facility_timezone)


def may_write(principal: Principal, settings: Settings) -> bool:
    return principal.has_any_role(settings.care_plan_writer_roles) or is_supervisor(principal, settings)


def may_sign_off(principal: Principal, settings: Settings) -> bool:
    return principal.has_any_role(settings.pcp_roles)


def require_reader(principal: Principal) -> None:
    if not principal.roles:
        raise Problem(403, "Forbidden", "reading care plans needs a role")


def require_writer(principal: Principal, settings: Settings) -> None:
    if not may_write(principal, settings):
        raise Problem(403, "Forbidden", "changing care plans needs a facilitator or supervisor role")


def _precondition(header: str | None, version: int) -> None:
    try:
        check_if_match(header, version)
    except PreconditionError as exc:
        raise Problem(
            exc.status,
            "Precondition failed" if exc.status == 412 else "Precondition required",
            exc.message,
            field="If-Match",
        ) from None


def _invalid(errors: list[PlanError]) -> Problem:
    first = errors[0]
    return Problem(
        422,
        "Care plan is not valid",
        "; ".join(f"{e.field}: {e.message}" for e in errors),
        field=first.field,
        errors=[{"field": e.field, "message": e.message} for e in errors],
    )


def _conflict() -> Problem:
    return Problem(409, "Conflict", "the patient already has an active care plan", field="status")


def _respond(plan: CarePlanOut, response: Response) -> CarePlanOut:
    response.headers["ETag"] = etag(plan.version)
    return plan


def _audit(
    session: AsyncSession,
    principal: Principal,
    request: Request,
    action: AuditAction,
    patient_ids: list[str],
    outcome: AuditOutcome = AuditOutcome.SUCCESS,
) -> None:
    audit(session, request, principal, action=action, resource_type=RESOURCE, patient_ids=patient_ids, outcome=outcome)


@asynccontextmanager
async def audited_write(
    request: Request, principal: Principal, action: AuditAction, patient_ids: list[str]
) -> AsyncIterator[None]:
    """A refused write (403, 404, 409, 412, 422, 428) is audited too, in its own transaction: the
    write's transaction, audit record included, rolled back with the refusal."""
    try:
        yield
    except Problem:
        async with request.app.state.runtime.sessions() as session, session.begin():
            _audit(session, principal, request, action, patient_ids, AuditOutcome.MINOR_FAILURE)
        raise


def part2_task_scope(principal: Principal, settings: Settings) -> list[ColumnElement[bool]]:
    """Which tasks a writer may link: any task of the patient (the plan is the whole team's), except a
    42 CFR Part 2 one (`Task.part2`) the caller may not see: without the Part 2 permission, or without
    the patient's active Part 2 consent (app/api/access.py part2_condition). It reads as unknown."""
    return [part2_condition(principal, settings, task_part2_label(), Task.patient_id)]


def part2_hidden(principal: Principal, settings: Settings) -> ColumnElement[bool]:
    """Linked tasks whose activities this caller may not see: the complement of part2_task_scope."""
    return not_(part2_condition(principal, settings, task_part2_label(), Task.patient_id))


async def presented(
    session: AsyncSession, principal: Principal, settings: Settings, plans: list[CarePlanOut]
) -> list[CarePlanOut]:
    """Plans as this caller may see them: activities linked to 42 CFR Part 2 tasks left out unless the
    caller holds the Part 2 permission and the patient has an active consent."""
    hidden = await store.part2_task_ids(session, plans, part2_hidden(principal, settings))
    return [store.without_tasks(p, hidden) for p in plans]


async def validated_plan(
    session: AsyncSession,
    principal: Principal,
    settings: Settings,
    patient_id: uuid.UUID,
    body: CarePlanIn,
    current: CarePlanOut | None = None,
) -> CarePlanIn:
    """Ids given, checks passed; on update by a writer who may not see some Part 2 activities (no
    permission, or no active consent of the patient), those are carried over unchanged.

    The writer's plan is checked on its own, before the hidden activities join it: ids, duplicates and
    task links are judged as if the hidden activities did not exist, so no answer (a duplicate id, a task
    backing two activities) can reveal one. A hidden task the writer names reads as unknown (task_scope)."""
    plan = assign_ids(body)
    task_scope = part2_task_scope(principal, settings)
    errors = check_plan(plan) + await store.task_link_errors(session, patient_id, plan, task_scope)
    if errors:
        raise _invalid(errors)
    if current is not None:
        hidden = await store.part2_task_ids(session, [current], part2_hidden(principal, settings))
        plan = store.kept_hidden_activities(current, hidden, plan)
    return plan


async def visible_patient(
    session: AsyncSession, principal: Principal, settings: Settings, patient_id: uuid.UUID
) -> Patient | None:
    query = select(Patient).where(patient_id_condition(principal, settings, patient_id))
    return (await session.execute(query)).scalar_one_or_none()


def _patient_missing(patient_id: uuid.UUID) -> Problem:
    return Problem(404, "Not Found", f"patient {patient_id} is not known", field="patient_id")


def _plan_missing(plan_id: uuid.UUID) -> Problem:
    return Problem(404, "Not Found", f"care plan {plan_id} is not known", field="care_plan_id")


@router.post(
    "/patients/{patient_id}/care-plans",
    status_code=201,
    summary="Create a care plan",
    dependencies=scoped(RESOURCE, interaction="c"),  # a create, though the path names the patient
)
async def create_care_plan(
    patient_id: uuid.UUID, body: CarePlanIn, request: Request, response: Response, principal: CurrentPrincipal
) -> CarePlanOut:
    async with audited_write(request, principal, AuditAction.CREATE, [str(patient_id)]):
        settings: Settings = request.app.state.settings
        require_writer(principal, settings)
        async with request.app.state.runtime.sessions() as session, session.begin():
            patient = await visible_patient(session, principal, settings, patient_id)
            if patient is None:
                raise _patient_missing(patient_id)
            if patient.merged_into_id is not None:
                raise Problem(409, "Conflict", f"patient was merged into {patient.merged_into_id}", field="patient_id")
            plan = await validated_plan(session, principal, settings, patient_id, body)
            try:
                out = await store.create_plan(
                    session, patient_id, plan, principal.subject, zone=facility_zone(settings)
                )
            except store.ActivePlanExists:
                raise _conflict() from None
            _audit(session, principal, request, AuditAction.CREATE, [str(patient_id)])
        response.headers["Location"] = f"/care-plans/{out.id}"
        return _respond(out, response)


@router.get("/patients/{patient_id}/care-plan", summary="The patient's active care plan", dependencies=scoped(RESOURCE))
async def active_care_plan(
    patient_id: uuid.UUID, request: Request, response: Response, principal: CurrentPrincipal
) -> CarePlanOut:
    settings: Settings = request.app.state.settings
    require_reader(principal)
    async with request.app.state.runtime.sessions() as session, session.begin():
        patient = await visible_patient(session, principal, settings, patient_id)
        row = await store.active_plan_of(session, patient_id) if patient is not None else None
        ok = AuditOutcome.SUCCESS if row is not None else AuditOutcome.MINOR_FAILURE
        _audit(session, principal, request, AuditAction.READ, [str(patient_id)], ok)
        out = (await presented(session, principal, settings, [store.plan_out(row)]))[0] if row is not None else None
    if patient is None:
        raise _patient_missing(patient_id)
    if out is None:
        raise Problem(404, "Not Found", "the patient has no active care plan", field="patient_id")
    return _respond(out, response)


@router.get(
    "/patients/{patient_id}/care-plans",
    summary="All of a patient's care plans, newest first",
    dependencies=scoped(RESOURCE),
)
async def patient_care_plans(patient_id: uuid.UUID, request: Request, principal: CurrentPrincipal) -> list[CarePlanOut]:
    settings: Settings = request.app.state.settings
    require_reader(principal)
    async with request.app.state.runtime.sessions() as session, session.begin():
        patient = await visible_patient(session, principal, settings, patient_id)
        rows = await store.plans_of(session, patient_id) if patient is not None else []
        ok = AuditOutcome.SUCCESS if patient is not None else AuditOutcome.MINOR_FAILURE
        _audit(session, principal, request, AuditAction.READ, [str(patient_id)], ok)
        plans = await presented(session, principal, settings, [store.plan_out(r) for r in rows])
    if patient is None:
        raise _patient_missing(patient_id)
    return plans


@router.get(
    "/care-plans/sign-off-due",
    summary="Active care plans due or overdue for PCP sign-off",
    dependencies=scoped(RESOURCE),
)
async def care_plans_sign_off_due(
    request: Request,
    principal: CurrentPrincipal,
    limit: Annotated[int, Query(ge=1, le=MAX_DUE_LIST)] = 100,
) -> SignOffDueList:
    settings: Settings = request.app.state.settings
    require_reader(principal)
    policy = policy_from(settings)
    now = utcnow()
    async with request.app.state.runtime.sessions() as session, session.begin():
        rows = await store.sign_off_due(session, patient_condition(principal, settings), policy, now, limit)
        _audit(session, principal, request, AuditAction.READ, [str(r.patient_id) for r in rows])
        items = []
        shown = await presented(session, principal, settings, [store.plan_out(r) for r in rows])
        for row, plan in zip(rows, shown, strict=True):
            activated = row.activated_at or row.created_at
            items.append(
                SignOffDueItem(
                    plan=plan,
                    due_at=policy.due_at(activated, row.signed_off_at),
                    state=policy.state(activated, row.signed_off_at, now),
                )
            )
    return SignOffDueList(items=items, count=len(items))


@router.get("/care-plans/{care_plan_id}", summary="Read a care plan", dependencies=scoped(RESOURCE))
async def read_care_plan(
    care_plan_id: uuid.UUID, request: Request, response: Response, principal: CurrentPrincipal
) -> CarePlanOut:
    settings: Settings = request.app.state.settings
    require_reader(principal)
    async with request.app.state.runtime.sessions() as session, session.begin():
        row = await store.visible_plan(session, care_plan_id, patient_condition(principal, settings))
        ok = AuditOutcome.SUCCESS if row is not None else AuditOutcome.MINOR_FAILURE
        _audit(session, principal, request, AuditAction.READ, [str(row.patient_id)] if row else [], ok)
        out = (await presented(session, principal, settings, [store.plan_out(row)]))[0] if row is not None else None
    if out is None:
        raise _plan_missing(care_plan_id)
    return _respond(out, response)


@router.put(
    "/care-plans/{care_plan_id}", summary="Replace a care plan (If-Match required)", dependencies=scoped(RESOURCE)
)
async def update_care_plan(
    care_plan_id: uuid.UUID,
    body: CarePlanReplace,
    request: Request,
    response: Response,
    principal: CurrentPrincipal,
    if_match: Annotated[str | None, Header(alias="If-Match")] = None,
) -> CarePlanOut:
    async with audited_write(request, principal, AuditAction.UPDATE, []):
        settings: Settings = request.app.state.settings
        require_writer(principal, settings)
        try:
            async with request.app.state.runtime.sessions() as session, session.begin():
                row = await store.visible_plan(
                    session, care_plan_id, patient_condition(principal, settings), for_update=True
                )
                if row is None:
                    raise _plan_missing(care_plan_id)
                _precondition(if_match, row.version)
                plan = await validated_plan(
                    session, principal, settings, row.patient_id, body.plan(), store.plan_out(row)
                )
                try:
                    out = await store.update_plan(session, row, plan, principal.subject, zone=facility_zone(settings))
                except store.ActivePlanExists:
                    raise _conflict() from None
                out = (await presented(session, principal, settings, [out]))[0]
                _audit(session, principal, request, AuditAction.UPDATE, [str(row.patient_id)])
        except StaleDataError:
            raise Problem(412, "Precondition failed", "the care plan changed meanwhile", field="If-Match") from None
        return _respond(out, response)


@router.post(
    "/care-plans/{care_plan_id}/sign-off",
    summary="PCP sign-off of the version read (If-Match required)",
    dependencies=scoped(RESOURCE),
)
async def sign_off_care_plan(
    care_plan_id: uuid.UUID,
    request: Request,
    response: Response,
    principal: CurrentPrincipal,
    if_match: Annotated[str | None, Header(alias="If-Match")] = None,
) -> CarePlanOut:
    async with audited_write(request, principal, AuditAction.UPDATE, []):
        settings: Settings = request.app.state.settings
        if not may_sign_off(principal, settings):
            raise Problem(403, "Forbidden", "signing off care plans needs a PCP role")
        try:
            async with request.app.state.runtime.sessions() as session, session.begin():
                row = await store.visible_plan(
                    session, care_plan_id, patient_condition(principal, settings), for_update=True
                )
                if row is None:
                    raise _plan_missing(care_plan_id)
                _precondition(if_match, row.version)
                if row.status != store.ACTIVE:
                    raise Problem(
                        409,
                        "Conflict",
                        f"only an active plan can be signed off (this one is {row.status})",
                        field="status",
                    )
                out = await store.sign_off_plan(session, row, principal.subject, zone=facility_zone(settings))
                out = (await presented(session, principal, settings, [out]))[0]
                _audit(session, principal, request, AuditAction.UPDATE, [str(row.patient_id)])
        except StaleDataError:
            raise Problem(412, "Precondition failed", "the care plan changed meanwhile", field="If-Match") from None
        return _respond(out, response)


@router.get(
    "/care-plans/{care_plan_id}/history",
    summary="Every version of a care plan, newest first",
    dependencies=scoped(RESOURCE),
)
async def care_plan_history(
    care_plan_id: uuid.UUID, request: Request, principal: CurrentPrincipal
) -> list[CarePlanVersionOut]:
    settings: Settings = request.app.state.settings
    require_reader(principal)
    async with request.app.state.runtime.sessions() as session, session.begin():
        row = await store.visible_plan(session, care_plan_id, patient_condition(principal, settings))
        versions = await store.versions_of(session, care_plan_id) if row is not None else []
        snapshots = [CarePlanOut.model_validate(v.snapshot) for v in versions]
        snapshots = await presented(session, principal, settings, snapshots)
        ok = AuditOutcome.SUCCESS if row is not None else AuditOutcome.MINOR_FAILURE
        _audit(session, principal, request, AuditAction.READ, [str(row.patient_id)] if row else [], ok)
    if row is None:
        raise _plan_missing(care_plan_id)
    return [
        CarePlanVersionOut(
            version=v.version,
            recorded_at=v.recorded_at,
            actor=v.actor,
            action=v.action,
            plan=plan,
        )
        for v, plan in zip(versions, snapshots, strict=True)
    ]
