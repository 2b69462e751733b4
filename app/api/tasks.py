"""Task worklist: `GET /tasks`, scoped to the caller's roles unless the caller supervises."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic_core import to_json
from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.access import encounter_part2_condition, may_work_on, task_conditions
from app.api.auth import CurrentPrincipal, Principal
from app.api.problems import Problem
from app.api.schemas import (
    AttemptIn,
    HistoryEntry,
    RuleRef,
    TaskExplanation,
    TaskList,
    TaskOut,
    TriggeringEvent,
    TriggeringScreening,
    WorklistPage,
)
from app.api.scopes import scoped
from app.api.worklist_query import PageQuery, run_page
from app.db.models import Encounter, InboundEvent, Patient, ScreeningEvent, Task, TaskHistory, utcnow
from app.rules.config import MemberRuleSpec, RuleSpec
from app.rules.engine import RuleEngine
from app.state.audit import AuditAction, AuditOutcome, audit_values, record_audit
from app.state.task_actions import lock_task
from app.state.tasks import SUPERSEDED_BY_KEY, record_attempt
from app.state.worklists import PatientView, TaskFilters
from app.tasks.actions import etag, parse_etag
from app.tasks.lifecycle import ACTIVE, ACTIVE_STATUSES, STATUSES, TransitionError, timeliness
from app.tasks.worklist import Cursor, CursorError, Order, SortKey

router = APIRouter(tags=["tasks"], dependencies=scoped("Task"))  # SMART scope: docs/security.md


def _split(values: list[str] | None, field: str = "query") -> list[str]:
    found = [v.strip() for raw in values or [] for v in raw.split(",") if v.strip()]
    if any("\x00" in v for v in found):  # PostgreSQL text cannot hold NUL: a 422, not a driver error
        raise Problem(422, "Request is not valid", "values may not contain NUL characters", field=field)
    return found


def _display_name(patient: Patient | PatientView) -> str | None:
    parts = [p for p in (patient.given_name, patient.family_name) if p]
    return " ".join(parts) or None


def task_item(
    task: Task | Row[Any], patient: Patient | PatientView | None, now: datetime, due_soon: timedelta
) -> dict[str, Any]:
    """A task as TaskOut's fields, ready for JSON: a worklist page serializes these directly, since
    validating values typed by the database columns again per row only cost time (docs/benchmarks.md).
    Ids as text: the JSON encoder takes asyncpg's own UUID type the slow way (4x)."""
    return {
        "id": str(task.id),
        "type": task.type,
        "status": task.status,
        "priority": task.priority,
        "role": task.role,
        "team": task.team,
        "owner": task.owner,
        "patient": None
        if patient is None
        else {"id": str(patient.id), "name": _display_name(patient), "birth_date": patient.birth_date},
        "encounter_id": _text(task.encounter_id),
        "due_at": task.due_at,
        "due_basis": task.due_basis,
        # The enum's text: pydantic-core serializes an Enum member through Python, a third of a page's JSON time.
        "timeliness": timeliness(task.due_at, now, due_soon).value if task.status in ACTIVE else None,
        "escalated_at": task.escalated_at,
        "failed_attempts": task.failed_attempts,
        "business_status": task.business_status,
        "rule": {"id": task.rule_id, "version": task.rule_version},
        "triggering_event_ids": task.triggering_event_ids,
        "created_at": task.created_at,
        "updated_at": task.updated_at,
        "version": task.version,
    }


def _text(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)


def _task_out(
    task: Task | Row[Any], patient: Patient | PatientView | None, now: datetime, due_soon: timedelta
) -> TaskOut:
    return TaskOut.model_validate(task_item(task, patient, now, due_soon))


async def _task_list(
    request: Request, principal: Principal, conditions: tuple[Any, ...], limit: int, what: str
) -> TaskList:
    """Tasks matching `conditions` within the caller's scope (app/api/access.py), soonest due first; audited."""
    query = (
        select(Task, Patient)
        .outerjoin(Patient, Patient.id == Task.patient_id)  # operational tasks (a missing roster file) have none
        .where(*conditions, *task_conditions(principal, request.app.state.settings))
        .order_by(Task.due_at, Task.id)
        .limit(limit)
    )
    async with request.app.state.runtime.sessions() as session, session.begin():
        rows = (await session.execute(query)).all()
        now, due_soon = utcnow(), _due_soon(request)
        items = [_task_out(task, patient, now, due_soon) for task, patient in rows]
        record_audit(
            session,
            principal.subject,
            principal.roles,
            action=AuditAction.READ,
            resource_type="Task",
            request=what,
            patient_ids=[str(item.patient.id) for item in items if item.patient],
        )
    return TaskList(items=items, count=len(items))


MAX_FILTER_VALUES = 20  # per filter of a worklist request
UNASSIGNED = "none"  # team=none: the unattributed pool; owner=none: unclaimed
ME = "me"  # owner=me: the caller


@dataclass(frozen=True, slots=True)
class PageRequest:
    sort: SortKey
    order: Order
    limit: int
    cursor: Cursor | None


def worklist_filters(
    principal: Principal,
    *,
    status: list[str] | None,
    type_: list[str] | None,
    team: list[str] | None,
    owner: list[str] | None,
    patient: list[uuid.UUID] | None,
    due_before: datetime | None,
    due_after: datetime | None,
    overdue: bool | None,
    due_soon: bool | None,
) -> TaskFilters:
    for name, given in (("status", status), ("type", type_), ("team", team), ("owner", owner), ("patient", patient)):
        # Each count of values is a statement shape of its own (app/api/worklist_query.py): bounded.
        if given and sum(len(str(v).split(",")) for v in given) > MAX_FILTER_VALUES:
            raise Problem(422, "Request is not valid", f"at most {MAX_FILTER_VALUES} values", field=name)
    statuses = _split(status, "status") or list(ACTIVE_STATUSES)
    unknown = sorted(set(statuses) - STATUSES)
    if unknown:
        raise Problem(422, "Request is not valid", f"unknown task status: {', '.join(unknown)}", field="status")
    teams, owners = _split(team, "team"), _split(owner, "owner")
    for name, value in (("due_before", due_before), ("due_after", due_after)):
        if value is not None and value.tzinfo is None:
            raise Problem(422, "Request is not valid", "a date-time with a zone offset is required", field=name)
    return TaskFilters(
        statuses=statuses,
        types=_split(type_, "type"),
        teams=[t for t in teams if t != UNASSIGNED],
        unassigned_team=UNASSIGNED in teams,
        owners=[principal.subject if o == ME else o for o in owners if o != UNASSIGNED],
        unowned=UNASSIGNED in owners,
        patients=list(patient or []),
        due_before=due_before,
        due_after=due_after,
        overdue=overdue,
        due_soon=due_soon,
    )


def queue_roles(request: Request, principal: Principal, role: list[str] | None) -> list[str]:
    """The role queues a worklist reads: those asked for, else the caller's own (a supervisor's: all,
    which is the empty list). A facilitator asking for another role's queue is refused."""
    is_supervisor = principal.has_any_role(request.app.state.settings.supervisor_roles)
    roles = _split(role, "role") or ([] if is_supervisor else sorted(principal.roles))
    if not is_supervisor and not set(roles) <= principal.roles:
        raise Problem(403, "Forbidden", "you may only read the queues of your own roles", field="role")
    return roles


def page_request(request: Request, sort: SortKey, order: Order, limit: int | None, cursor: str | None) -> PageRequest:
    settings = request.app.state.settings
    size = settings.worklist_page_size if limit is None else limit
    if size > settings.worklist_max_page_size:
        raise Problem(422, "Request is not valid", f"limit is at most {settings.worklist_max_page_size}", field="limit")
    decoded = None
    if cursor:
        try:
            decoded = Cursor.decode(cursor)
        except CursorError as exc:
            raise Problem(422, "Request is not valid", str(exc), field="cursor") from None
        if (decoded.sort, decoded.order) != (sort, order):
            raise Problem(422, "Request is not valid", "the cursor belongs to another sort order", field="cursor")
    return PageRequest(sort, order, size, decoded)


async def worklist_page(
    request: Request, principal: Principal, filters: TaskFilters, page: PageRequest, what: str
) -> WorklistBody:
    """A page of the tasks matching `filters` in the caller's scope (app/api/access.py); audited with
    the patients it shows. Runs through statements built once per shape (app/api/worklist_query.py)."""
    settings = request.app.state.settings
    query = PageQuery.of(principal, settings, filters, page.sort, page.order, page.cursor, page.limit)
    now, due_soon = utcnow(), _due_soon(request)
    runtime = request.app.state.runtime
    async with runtime.engine.connect() as conn:
        found = await run_page(conn, query, now, due_soon)
    items = [task_item(task, patient, now, due_soon) for task, patient in found.rows]
    audit = audit_values(
        principal.subject,
        principal.roles,
        action=AuditAction.READ,
        resource_type="Task",
        request=what,
        patient_ids=[item["patient"]["id"] for item in items if item["patient"]],
    )
    await runtime.audit.write(audit)  # committed with concurrent pages' records (app/state/audit_batch.py)
    return WorklistBody(
        items=items,
        count=len(items),
        total=found.total,
        total_exact=found.total_exact,
        next_cursor=found.next_cursor.encode() if found.next_cursor else None,
        sort=page.sort.value,
        order=page.order.value,
    )


@dataclass(frozen=True, slots=True)
class WorklistBody:
    """A worklist page as WorklistPage's fields, the items `task_item` dicts (typed by the columns)."""

    items: list[dict[str, Any]]
    count: int
    total: int
    total_exact: bool
    next_cursor: str | None
    sort: str
    order: str

    def response(self) -> Response:
        # The schema is WorklistPage (response_model, for the document); validating it again cost time.
        body = {name: getattr(self, name) for name in self.__slots__}  # asdict would deep-copy the items
        return Response(to_json(body), media_type="application/json")


@router.get("/tasks", response_model=WorklistPage)
async def list_tasks(
    request: Request,
    principal: CurrentPrincipal,
    role: Annotated[
        list[str] | None, Query(description="role queue(s); default: the caller's roles (supervisors: all)")
    ] = None,
    status: Annotated[
        list[str] | None, Query(description="FHIR Task status(es), repeat or comma-separate; default: open")
    ] = None,
    type_: Annotated[list[str] | None, Query(alias="type", description="task type(s)")] = None,
    team: Annotated[list[str] | None, Query(description="team(s); `none` = the unattributed pool")] = None,
    owner: Annotated[list[str] | None, Query(description="owner(s) (token sub); `me`; `none` = unclaimed")] = None,
    patient: Annotated[list[uuid.UUID] | None, Query(description="patient id(s)")] = None,
    due_before: Annotated[datetime | None, Query(description="due strictly before (date-time with offset)")] = None,
    due_after: Annotated[datetime | None, Query(description="due at or after (date-time with offset)")] = None,
    overdue: Annotated[bool | None, Query(description="true: past due; false: not yet due")] = None,
    due_soon: Annotated[bool | None, Query(description="true: due within the rules' due-soon window")] = None,
    sort: Annotated[SortKey, Query(description="due (default), priority, created or updated")] = SortKey.DUE,
    order: Annotated[Order, Query(description="asc (default) or desc")] = Order.ASC,
    cursor: Annotated[str | None, Query(max_length=512, description="`next_cursor` of the previous page")] = None,
    limit: Annotated[int | None, Query(ge=0, description="page size; 0 = total only")] = None,
) -> Response:
    roles = queue_roles(request, principal, role)
    filters = worklist_filters(
        principal,
        status=status,
        type_=type_,
        team=team,
        owner=owner,
        patient=patient,
        due_before=due_before,
        due_after=due_after,
        overdue=overdue,
        due_soon=due_soon,
    )
    filters.roles = roles
    page = page_request(request, sort, order, limit, cursor)
    return (await worklist_page(request, principal, filters, page, f"GET /tasks?{request.url.query}")).response()


@router.get("/tasks/{task_id}/explain", response_model=TaskExplanation)
async def explain_task(request: Request, principal: CurrentPrincipal, task_id: uuid.UUID) -> TaskExplanation:
    """The rule (id, version) and events that raised the task, how its due time and role were chosen,
    and its history: what a facilitator or auditor needs to see why it exists."""
    async with request.app.state.runtime.sessions() as session, session.begin():
        task = await _visible_task(session, request, principal, task_id, f"GET /tasks/{task_id}/explain")
        explanation = await _explain(session, task, _engine(request).explainable_rules) if task is not None else None
        if explanation is not None and task is not None:
            explanation = await _hide_part2_readmission(session, request, principal, task, explanation)
    if explanation is None:
        # Not yours, or Part 2 without the permission: the same answer as a task that does not exist
        # (raised after the commit, so the refused attempt stays audited).
        raise Problem(404, "Not Found", "no such task", field="task_id")
    return explanation


# Shown instead of the reason when the superseding readmission is Part 2 data the caller may not see.
NEUTRAL_SUPERSEDED = "closed by a later encounter"


async def _hide_part2_readmission(
    session: AsyncSession, request: Request, principal: Principal, task: Task, explanation: TaskExplanation
) -> TaskExplanation:
    """A task superseded by a Part 2 readmission the caller may not see: no encounter id, and the
    history entries that supersession wrote (its cancellation, the reopening when it was voided) carry a
    neutral reason (42 CFR Part 2). Those entries are found by the encounter they name under
    SUPERSEDED_BY_KEY (app/state/tasks.py), never by their wording; whether the caller may see that
    encounter is decided now, so a stay that became Part 2 after the fact is hidden too."""
    named = {str(h.detail[SUPERSEDED_BY_KEY]) for h in explanation.history if h.detail.get(SUPERSEDED_BY_KEY)}
    if task.superseded_by_encounter_id is not None:
        named.add(str(task.superseded_by_encounter_id))
    ids = _uuids(sorted(named))
    if not ids:
        return explanation
    condition = encounter_part2_condition(principal, request.app.state.settings)
    visible = {
        str(e) for e in (await session.execute(select(Encounter.id).where(Encounter.id.in_(ids), condition))).scalars()
    }
    hidden = {str(i) for i in ids} - visible
    if not hidden:
        return explanation
    history = [
        h.model_copy(update={"detail": {"reason": NEUTRAL_SUPERSEDED}})
        if str(h.detail.get(SUPERSEDED_BY_KEY)) in hidden
        else h
        for h in explanation.history
    ]
    update: dict[str, Any] = {"history": history}
    if str(task.superseded_by_encounter_id) in hidden:
        update["superseded_by_encounter_id"] = None
    return explanation.model_copy(update=update)


async def _explain(
    session: AsyncSession, task: Task, rules_by_id: Mapping[str, RuleSpec | MemberRuleSpec]
) -> TaskExplanation:
    ids = _uuids(task.triggering_event_ids)
    events = (await session.execute(select(InboundEvent).where(InboundEvent.id.in_(ids)))).scalars()
    by_id = {str(e.id): e for e in events}
    screenings = (await session.execute(select(ScreeningEvent).where(ScreeningEvent.id.in_(ids)))).scalars()
    history = (
        await session.execute(select(TaskHistory).where(TaskHistory.task_id == task.id).order_by(TaskHistory.id))
    ).scalars()
    rule = rules_by_id.get(task.rule_id)
    supersedes = (
        (
            await session.execute(
                select(Task.id)
                .where(Task.superseded_by_encounter_id == task.encounter_id, Task.rule_id == task.rule_id)
                .order_by(Task.created_at)
            )
        )
        .scalars()
        .all()
        if task.encounter_id is not None
        else []
    )
    return TaskExplanation(
        task_id=task.id,
        type=task.type,
        status=task.status,
        rule=RuleRef(id=task.rule_id, version=task.rule_version),
        rule_description=rule.description if rule is not None else None,
        rule_version_current=rule is not None and rule.version == task.rule_version,
        triggering_events=[_triggering(event_id, by_id.get(event_id)) for event_id in task.triggering_event_ids],
        screenings=[
            TriggeringScreening(
                event_id=str(s.id),
                resource=f"{s.source_type}/{s.source_id}",
                instrument=s.instrument,
                score=s.score,
                positive=s.positive,
                status=s.status,
                effective_at=s.effective_at,
                received_at=s.recorded_at,
            )
            for s in screenings
        ],
        due_at=task.due_at,
        due_basis=task.due_basis,
        route_basis=task.route_basis,
        supersedes=list(supersedes),
        superseded_by_encounter_id=task.superseded_by_encounter_id,
        history=[
            HistoryEntry(
                at=h.at,
                actor=h.actor,
                action=h.action,
                from_status=h.from_status,
                to_status=h.to_status,
                detail=h.detail,
            )
            for h in history
        ],
    )


def _uuids(values: list[str]) -> list[uuid.UUID]:
    found = []
    for value in values:
        try:
            found.append(uuid.UUID(value))
        except ValueError:
            continue
    return found


def _triggering(event_id: str, event: InboundEvent | None) -> TriggeringEvent:
    if event is None:
        return TriggeringEvent(event_id=event_id, source=None, message_type=None, event_time=None, received_at=None)
    return TriggeringEvent(
        event_id=event_id,
        source=event.source,
        message_type=event.message_type,
        event_time=event.event_time,
        received_at=event.received_at,
    )


def _engine(request: Request) -> RuleEngine:
    return request.app.state.runtime.rule_engine


def _due_soon(request: Request) -> timedelta:
    return timedelta(hours=_engine(request).rules.lifecycle.due_soon_hours)


async def _visible_task(
    session: AsyncSession, request: Request, principal: Principal, task_id: uuid.UUID, what: str, *, write: bool = False
) -> Task | None:
    """The task when it is in the caller's scope (app/api/access.py); else None, which callers answer
    as 404 so a hidden task's existence is not disclosed. Audited either way."""
    settings = request.app.state.settings
    query = select(Task).where(Task.id == task_id)
    task = (await session.execute(query.with_for_update() if write else query)).scalar_one_or_none()
    visible = (
        task is not None
        and (
            await session.execute(select(Task.id).where(Task.id == task_id, *task_conditions(principal, settings)))
        ).first()
        is not None
    )
    record_audit(
        session,
        principal.subject,
        principal.roles,
        action=AuditAction.UPDATE if write else AuditAction.READ,
        resource_type="Task",
        request=what,
        patient_ids=[str(task.patient_id)] if task is not None else [],
        outcome=AuditOutcome.SUCCESS if visible else AuditOutcome.MINOR_FAILURE,
    )
    return task if visible else None


@router.post("/tasks/{task_id}/attempts", response_model=TaskOut)
async def log_attempt(
    request: Request,
    response: Response,
    principal: CurrentPrincipal,
    task_id: uuid.UUID,
    body: AttemptIn,
    if_match: Annotated[str | None, Header(alias="If-Match", description='W/"<version>"')] = None,
) -> TaskOut:
    """Record an outreach attempt (reached, left-message, no-answer, wrong-number, declined). The
    configured number of unsuccessful attempts fails the task as "unable to reach"."""
    try:
        expected = parse_etag(if_match)
    except ValueError as exc:
        raise Problem(412, "Precondition Failed", str(exc), field="If-Match") from None
    refused: Problem | None = None
    out: TaskOut | None = None
    async with request.app.state.runtime.sessions() as session, session.begin():
        await lock_task(session, task_id)  # waits for a concurrent action instead of failing (SQLite, PostgreSQL)
        task = await _visible_task(session, request, principal, task_id, f"POST /tasks/{task_id}/attempts", write=True)
        if task is not None and expected is not None and expected != task.version:
            refused = Problem(412, "Precondition Failed", f"the task is at version {task.version}", field="If-Match")
        elif task is not None and not may_work_on(task, principal, request.app.state.settings):
            refused = Problem(409, "Conflict", "the task is owned by someone else", field="owner")
        elif task is not None:
            try:
                record_attempt(
                    session,
                    task,
                    outcome=body.outcome,
                    actor=f"user:{principal.subject}",
                    note=body.note,
                    max_failed=_engine(request).rules.lifecycle.max_failed_attempts,
                )
            except TransitionError as exc:
                refused = Problem(409, "Conflict", str(exc), field="status")
            else:
                task.updated_at = utcnow()  # an attempt is a change: new version, new ETag, lastModified
                await session.flush()
                patient = await session.get(Patient, task.patient_id) if task.patient_id else None
                out = _task_out(task, patient, utcnow(), _due_soon(request))
    if refused is not None:
        raise refused
    if out is None:
        raise Problem(404, "Not Found", "no such task", field="task_id")
    response.headers["ETag"] = etag(out.version)
    return out


@router.get("/tasks/escalated", response_model=TaskList)
async def escalated_queue(
    request: Request, principal: CurrentPrincipal, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> TaskList:
    """The supervisor queue: open tasks the escalation job found overdue, most overdue first, for the
    supervisor's teams (and tasks with no team)."""
    settings = request.app.state.settings
    if not principal.has_any_role(settings.supervisor_roles):
        raise Problem(403, "Forbidden", "the escalation queue is for supervisors", field="role")
    return await _task_list(
        request,
        principal,
        (Task.status.in_(ACTIVE_STATUSES), Task.escalated_at.is_not(None)),
        limit,
        "GET /tasks/escalated",
    )


async def visible_task_out(request: Request, principal: Principal, task_id: uuid.UUID, what: str) -> TaskOut | None:
    """One task as the API shows it, when in the caller's scope (else None); audited either way."""
    async with request.app.state.runtime.sessions() as session, session.begin():
        task = await _visible_task(session, request, principal, task_id, what)
        if task is None:
            return None
        patient = await session.get(Patient, task.patient_id) if task.patient_id else None
        return _task_out(task, patient, utcnow(), _due_soon(request))


@router.get("/tasks/{task_id}", response_model=TaskOut)
async def read_task(request: Request, principal: CurrentPrincipal, task_id: uuid.UUID) -> JSONResponse:
    """One task, with `ETag: W/"<version>"` for If-Match on the actions."""
    out = await visible_task_out(request, principal, task_id, f"GET /tasks/{task_id}")
    if out is None:
        raise Problem(404, "Not Found", "no such task", field="task_id")
    return JSONResponse(out.model_dump(mode="json"), headers={"ETag": etag(out.version)})
