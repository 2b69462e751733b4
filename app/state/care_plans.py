"""Care plans in the database: scoped lookups, versioned writes (a whole snapshot per version), sign-off.

Callers hold the transaction. Every write bumps `version` (SQLAlchemy's version counter, so a racing
writer that read the same version fails with StaleDataError rather than overwriting) and appends the
new version's snapshot to care_plan_versions.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, tzinfo

from sqlalchemy import ColumnElement, and_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.careplans.model import CarePlanIn, CarePlanOut, PlanError, SignOff, next_free_id
from app.careplans.signoff import SignOffPolicy
from app.db.models import CarePlan, CarePlanVersion, Patient, RosterMember, Task, utcnow

ACTIVE = "active"


class ActivePlanExists(Exception):
    """The patient already has an active care plan (one at a time)."""


def _active_key(patient_id: uuid.UUID, status: str) -> uuid.UUID | None:
    return patient_id if status == ACTIVE else None


def plan_out(row: CarePlan) -> CarePlanOut:
    content = row.content or {}
    sign_off = None
    if row.signed_off_at is not None and row.signed_off_by is not None and row.signed_off_version is not None:
        sign_off = SignOff(
            by=row.signed_off_by,
            at=row.signed_off_at,
            version=row.signed_off_version,
            # a sign-off bumps the version itself: it covers the plan while nothing changed after it
            covers_current=row.signed_off_version == row.version,
        )
    return CarePlanOut(
        id=row.id,
        patient_id=row.patient_id,
        status=row.status,  # type: ignore[arg-type]
        title=row.title,
        description=row.description,
        period_start=row.period_start,
        period_end=row.period_end,
        goals=content.get("goals", []),
        activities=content.get("activities", []),
        care_team=content.get("care_team", []),
        patient_actions=content.get("patient_actions", []),
        version=row.version,
        sign_off=sign_off,
        activated_at=row.activated_at,
        created_at=row.created_at,
        created_by=row.created_by,
        updated_at=row.updated_at,
        updated_by=row.updated_by,
    )


def _content(plan: CarePlanIn) -> dict[str, object]:
    data = plan.model_dump(mode="json", include={"goals", "activities", "care_team", "patient_actions"})
    return dict(data)


def _apply(row: CarePlan, plan: CarePlanIn, now: datetime) -> bool:
    """Copy the plan onto the row; True when this write activates it."""
    activated = plan.status == ACTIVE and row.status != ACTIVE
    if activated:
        row.activated_at = now
    row.status = plan.status
    row.active_patient_id = _active_key(row.patient_id, plan.status)
    row.title = plan.title
    row.description = plan.description
    row.period_start = plan.period_start
    row.period_end = plan.period_end
    row.content = _content(plan)
    return activated


def scoped(patient_scope: ColumnElement[bool]) -> ColumnElement[bool]:
    """A care plan is visible when its patient is (app/api/access.py patient_condition)."""
    return select(Patient.id).where(Patient.id == CarePlan.patient_id, patient_scope).exists()


async def visible_plan(
    session: AsyncSession, plan_id: uuid.UUID, patient_scope: ColumnElement[bool], *, for_update: bool = False
) -> CarePlan | None:
    query = select(CarePlan).where(CarePlan.id == plan_id, scoped(patient_scope))
    if for_update:
        query = query.with_for_update(of=CarePlan)
    return (await session.execute(query)).scalar_one_or_none()


async def active_plan_of(session: AsyncSession, patient_id: uuid.UUID) -> CarePlan | None:
    return (
        await session.execute(select(CarePlan).where(CarePlan.patient_id == patient_id, CarePlan.status == ACTIVE))
    ).scalar_one_or_none()


async def plans_of(session: AsyncSession, patient_id: uuid.UUID) -> Sequence[CarePlan]:
    query = select(CarePlan).where(CarePlan.patient_id == patient_id).order_by(CarePlan.created_at.desc())
    return (await session.execute(query)).scalars().all()


async def task_link_errors(
    session: AsyncSession,
    patient_id: uuid.UUID,
    plan: CarePlanIn,
    task_scope: Sequence[ColumnElement[bool]] = (),
) -> list[PlanError]:
    """Each linked task must exist, be about this patient and be one the writer may see (`task_scope`,
    app/api/access.py task_conditions): a hidden task, a Part 2 one included, reads as unknown."""
    wanted = {a.task_id: i for i, a in enumerate(plan.activities) if a.task_id is not None}
    if not wanted:
        return []
    query = select(Task.id, Task.patient_id).where(Task.id.in_(list(wanted)), *task_scope)
    rows = (await session.execute(query)).all()
    owners = {task_id: owner for task_id, owner in rows}
    errors = []
    for task_id, i in wanted.items():
        if owners.get(task_id) != patient_id:
            errors.append(PlanError(f"activities.{i}.task_id", "no task with this id for this patient"))
    return errors


async def part2_task_ids(
    session: AsyncSession, plans: Sequence[CarePlanOut], hidden: ColumnElement[bool]
) -> set[uuid.UUID]:
    """Tasks linked from these plans that match `hidden`: the 42 CFR Part 2 tasks the reader may not
    see (app/api/care_plans.py part2_hidden: the task's `part2` label without permission and consent)."""
    ids = {a.task_id for p in plans for a in p.activities if a.task_id is not None}
    if not ids:
        return set()
    query = select(Task.id).where(Task.id.in_(list(ids)), hidden)
    return set((await session.execute(query)).scalars().all())


def without_tasks(plan: CarePlanOut, hidden: set[uuid.UUID]) -> CarePlanOut:
    """The plan as a reader without the Part 2 permission sees it: no activity that names a Part 2 task."""
    if not any(a.task_id in hidden for a in plan.activities):
        return plan
    return plan.model_copy(update={"activities": [a for a in plan.activities if a.task_id not in hidden]})


def kept_hidden_activities(current: CarePlanOut, hidden: set[uuid.UUID], plan: CarePlanIn) -> CarePlanIn:
    """A writer who could not see the Part 2 activities must not delete them by omission: they are kept
    (their links to goals the writer removed are dropped).

    Merged only after the writer's own plan passed every check (app/api/care_plans.py validated_plan),
    so no validation answer depends on them. An id the writer's plan uses that a kept activity holds
    goes to the writer; the kept activity takes the next free id instead (only a reader who may see it
    notices, in the new version)."""
    kept = [a for a in current.activities if a.task_id in hidden]
    if not kept:
        return plan
    goal_ids = {g.id for g in plan.goals if g.id}
    taken = {a.id for a in plan.activities if a.id} | {p.id for p in plan.patient_actions if p.id}
    carried = []
    for activity in kept:
        changes: dict[str, object] = {"goal_ids": [g for g in activity.goal_ids if g in goal_ids]}
        if activity.id is None or activity.id in taken:
            changes["id"] = next_free_id("a", taken)
        taken.add(str(changes.get("id", activity.id)))
        carried.append(activity.model_copy(update=changes))
    return plan.model_copy(update={"activities": [*plan.activities, *carried]})


async def _flush_or_conflict(session: AsyncSession) -> None:
    """A racing writer that activated another plan first trips the unique key: the same 409."""
    try:
        await session.flush()
    except IntegrityError as exc:
        if "active_patient_id" in str(exc.orig):
            raise ActivePlanExists from None
        raise


async def record_engagement(
    session: AsyncSession, patient_id: uuid.UUID, *, care_plan: date | None = None, pcp_sign_off: date | None = None
) -> None:
    """The engagement status file (docs/rosters.md) reports care plan and PCP sign-off dates per member."""
    values: dict[str, date] = {}
    if care_plan is not None:
        values["care_plan_date"] = care_plan
    if pcp_sign_off is not None:
        values["pcp_signoff_date"] = pcp_sign_off
    if values:
        await session.execute(
            update(RosterMember)
            .where(RosterMember.patient_id == patient_id, RosterMember.status == "active")
            .values(**values)
            .execution_options(synchronize_session=False)
        )


def _record_version(session: AsyncSession, row: CarePlan, actor: str, action: str) -> CarePlanOut:
    out = plan_out(row)
    session.add(
        CarePlanVersion(
            care_plan_id=row.id,
            version=row.version,
            recorded_at=row.updated_at,
            actor=actor,
            action=action,
            snapshot=out.model_dump(mode="json"),
        )
    )
    return out


async def create_plan(
    session: AsyncSession,
    patient_id: uuid.UUID,
    plan: CarePlanIn,
    actor: str,
    now: datetime | None = None,
    zone: tzinfo = UTC,
) -> CarePlanOut:
    now = now or utcnow()
    if plan.status == ACTIVE and await active_plan_of(session, patient_id) is not None:
        raise ActivePlanExists
    row = CarePlan(
        id=uuid.uuid4(),
        patient_id=patient_id,
        created_by=actor,
        updated_by=actor,
        created_at=now,
        updated_at=now,
        status="draft",
        content={},
    )
    activated = _apply(row, plan, now)
    session.add(row)
    await _flush_or_conflict(session)
    if activated:
        await record_engagement(session, patient_id, care_plan=now.astimezone(zone).date())
    return _record_version(session, row, actor, "create")


async def update_plan(
    session: AsyncSession, row: CarePlan, plan: CarePlanIn, actor: str, now: datetime | None = None, zone: tzinfo = UTC
) -> CarePlanOut:
    now = now or utcnow()
    if plan.status == ACTIVE and row.status != ACTIVE:
        other = await active_plan_of(session, row.patient_id)
        if other is not None and other.id != row.id:
            raise ActivePlanExists
    activated = _apply(row, plan, now)
    row.updated_by = actor
    row.updated_at = now
    await _flush_or_conflict(session)
    if activated:
        await record_engagement(session, row.patient_id, care_plan=now.astimezone(zone).date())
    return _record_version(session, row, actor, "update")


async def sign_off_plan(
    session: AsyncSession, row: CarePlan, actor: str, now: datetime | None = None, zone: tzinfo = UTC
) -> CarePlanOut:
    """Record the PCP's sign-off of the version they read; the sign-off is itself a new version."""
    now = now or utcnow()
    row.signed_off_by = actor
    row.signed_off_at = now
    row.updated_by = actor
    row.updated_at = now
    row.signed_off_version = row.version + 1  # the version this write creates: the signed one
    await session.flush()
    await record_engagement(session, row.patient_id, pcp_sign_off=now.astimezone(zone).date())
    return _record_version(session, row, actor, "sign-off")


async def versions_of(session: AsyncSession, plan_id: uuid.UUID) -> Sequence[CarePlanVersion]:
    query = (
        select(CarePlanVersion).where(CarePlanVersion.care_plan_id == plan_id).order_by(CarePlanVersion.version.desc())
    )
    return (await session.execute(query)).scalars().all()


async def version_of(session: AsyncSession, plan_id: uuid.UUID, version: int) -> CarePlanVersion | None:
    query = select(CarePlanVersion).where(CarePlanVersion.care_plan_id == plan_id, CarePlanVersion.version == version)
    return (await session.execute(query)).scalar_one_or_none()


async def sign_off_due(
    session: AsyncSession, patient_scope: ColumnElement[bool], policy: SignOffPolicy, now: datetime, limit: int
) -> list[CarePlan]:
    """Active plans in scope whose sign-off is overdue or falls due soon, soonest due first.

    Never-signed plans fall due by activation time, signed ones by sign-off time: each query is ordered
    by its own clock, so the first `limit` of the merge of the two is the first `limit` overall."""
    activated_before, signed_before = policy.cutoffs(now)
    never_signed = (
        and_(CarePlan.signed_off_at.is_(None), CarePlan.activated_at <= activated_before),
        CarePlan.activated_at,
    )
    lapsed = (
        and_(CarePlan.signed_off_at.is_not(None), CarePlan.signed_off_at <= signed_before),
        CarePlan.signed_off_at,
    )
    rows: list[CarePlan] = []
    for condition, clock in (never_signed, lapsed):
        query = (
            select(CarePlan)
            .where(CarePlan.status == ACTIVE, condition, scoped(patient_scope))
            .order_by(clock, CarePlan.id)
            .limit(limit)
        )
        rows += (await session.execute(query)).scalars().all()
    rows.sort(key=lambda r: (policy.due_at(r.activated_at or r.created_at, r.signed_off_at), str(r.id)))
    return rows[:limit]


MERGE_ACTOR = "system:merge"
ON_HOLD = "on-hold"


async def move_on_merge(
    session: AsyncSession, prior_id: uuid.UUID, survivor_id: uuid.UUID, now: datetime | None = None
) -> None:
    """A40: the merged record's plans move to the survivor, each as a new version. When both records
    have an active plan, the survivor's stays active and the moved one goes on hold for the team to
    reconcile (one active plan per patient holds throughout)."""
    plans = (await session.execute(select(CarePlan).where(CarePlan.patient_id == prior_id))).scalars().all()
    if not plans:
        return
    now = now or utcnow()
    survivor_active = await active_plan_of(session, survivor_id)
    for row in plans:
        row.patient_id = survivor_id
        if row.status == ACTIVE:  # its key (the prior id) is unique to it, so one flush never collides
            if survivor_active is None:
                row.active_patient_id = survivor_id
                survivor_active = row
            else:
                row.status = ON_HOLD
                row.active_patient_id = None
        row.updated_by = MERGE_ACTOR
        row.updated_at = now
    await session.flush()
    for row in plans:
        _record_version(session, row, MERGE_ACTOR, "merge")
