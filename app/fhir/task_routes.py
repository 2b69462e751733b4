"""FHIR R4 Task: read, search, update (PUT) and JSON Patch (PATCH) under /fhir/Task.

Scope, Part 2 and audit as the REST worklists (app/api/access.py): a task outside the caller's scope
is 404 on read and update and absent from search (and its total). Updates change status and owner
only and go through the same task actions as the REST API (claim, release, assign, start, complete,
cancel; app/tasks/actions.py), so the same ownership, state-machine and If-Match rules apply.

Search: `owner`, `status`, `patient`, `code`, `period` (carecoord matches the due time,
restriction.period.end: see docs/worklists.md), `_lastUpdated`, `_sort`, `_count`, with the R4 rules of
app/fhir/routes.py (repeats AND, commas OR, unknown parameters ignored unless `Prefer: handling=strict`,
modifiers refused). Paging is keyset (`_cursor` in the `next` link); `total` is exact.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import ColumnElement, and_, false, or_
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.access import is_supervisor, task_conditions
from app.api.audit import AuditAction, AuditOutcome, audit
from app.api.auth import CurrentPrincipal, Principal
from app.api.problems import Problem
from app.api.request_body import json_body
from app.api.scopes import scoped
from app.db.models import Task, utcnow
from app.fhir.json_patch import PatchError, apply_patch
from app.fhir.routes import fhir_base, fhir_response, search_entries, searchset
from app.fhir.search import (
    All,
    Cmp,
    Predicate,
    SearchParamError,
    applicable_params,
    handling_preference,
    parse_count,
    parse_date_criterion,
    parse_reference,
    parse_token,
    period_predicate,
    split_or,
)
from app.fhir.task_resource import (
    OWNER_TYPE,
    TASK_STATUS_SYSTEM,
    UpdateError,
    action_requests,
    task_resource,
    wanted_changes,
)
from app.settings import Settings
from app.state.task_actions import apply_to_locked, load_for_update, load_visible
from app.state.worklists import TaskFilters, filter_conditions, task_page
from app.tasks.actions import etag, parse_etag
from app.tasks.lifecycle import STATUSES
from app.tasks.worklist import Cursor, CursorError, Order, SortKey

router = APIRouter(prefix="/fhir", tags=["fhir"], dependencies=scoped("Task"))  # SMART scope: docs/security.md

SEARCH_PARAMS = ("owner", "status", "patient", "code", "period", "_lastUpdated")
RESULT_PARAMS = ("_count", "_sort", "_cursor")
DEFAULT_COUNT = 20
MAX_COUNT = 100
SORTS = {"period": SortKey.DUE, "_lastUpdated": SortKey.UPDATED, "authored-on": SortKey.CREATED,
         "priority": SortKey.PRIORITY}  # fmt: skip
JSON_PATCH = "application/json-patch+json"


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _render(request: Request, task: Task) -> dict[str, Any]:
    settings = _settings(request)
    return task_resource(task, type_system=settings.fhir_task_type_system, user_system=settings.fhir_user_system)


def _require_role(principal: Principal) -> None:
    if not principal.roles:
        raise Problem(403, "Forbidden", "reading tasks needs a role")


def _task_id(resource_id: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(resource_id)
    except ValueError:
        return None


def _not_found(resource_id: str) -> Problem:
    return Problem(404, "Not Found", f"Task/{resource_id[:64]} is not known")


def _headers(resource: dict[str, Any]) -> dict[str, str]:
    return {"ETag": etag(int(resource["meta"]["versionId"])), "Location": f"Task/{resource['id']}"}


@router.get("/Task/{resource_id}", summary="Read one Task")
async def read_task(resource_id: str, request: Request, principal: CurrentPrincipal) -> JSONResponse:
    _require_role(principal)
    key = _task_id(resource_id)
    resource: dict[str, Any] | None = None
    async with request.app.state.runtime.sessions() as session, session.begin():
        task, visible = (
            await load_visible(session, key, task_conditions(principal, _settings(request))) if key else (None, False)
        )
        if task is not None and visible:
            resource = _render(request, task)
        audit(
            session,
            request,
            principal,
            action=AuditAction.READ,
            resource_type="Task",
            patient_ids=[task.patient_id] if task is not None else [],
            outcome=AuditOutcome.SUCCESS if resource is not None else AuditOutcome.MINOR_FAILURE,
        )
    if resource is None:
        raise _not_found(resource_id)
    return fhir_response(resource, headers=_headers(resource))


# --- search ---------------------------------------------------------------------------------------


@dataclass
class TaskQuery:
    filters: TaskFilters = field(default_factory=lambda: TaskFilters(statuses=sorted(STATUSES)))
    applied: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    count: int = DEFAULT_COUNT
    sort: SortKey = SortKey.DUE
    order: Order = Order.ASC
    sort_text: str | None = None
    cursor: Cursor | None = None


def _point(column: Any, predicate: Predicate) -> ColumnElement[bool]:
    """A period predicate on a single instant (start = end = the column's value; never missing)."""
    if isinstance(predicate, Cmp):
        return column < predicate.value if predicate.op == "<" else column >= predicate.value
    parts = [_point(column, p) for p in predicate.parts]
    return and_(*parts) if isinstance(predicate, All) else or_(*parts)


def _owner_value(value: str) -> str:
    text = value.strip()
    if text.startswith(f"{OWNER_TYPE}/"):
        text = text[len(OWNER_TYPE) + 1 :]
    if not text:
        raise SearchParamError("owner", "empty value")
    return text


def parse_task_query(items: list[tuple[str, str]], settings: Settings, *, strict: bool) -> TaskQuery:
    query = TaskQuery()
    zone = ZoneInfo(settings.facility_timezone)
    statuses = set(STATUSES)
    for name, value in applicable_params(items, (*SEARCH_PARAMS, *RESULT_PARAMS), query.ignored, strict=strict):
        if name == "_count":
            query.count = parse_count(value, DEFAULT_COUNT, MAX_COUNT)
            continue
        if name == "_cursor":
            try:
                query.cursor = Cursor.decode(value.strip())
            except CursorError as exc:
                raise SearchParamError("_cursor", str(exc)) from None
            continue
        if name == "_sort":
            text = value.strip()
            key = text.removeprefix("-")
            if key not in SORTS or "," in text:
                raise SearchParamError("_sort", f"sort by one of {', '.join(SORTS)} (prefix - for descending)")
            query.sort, query.order = SORTS[key], Order.DESC if text.startswith("-") else Order.ASC
            query.sort_text = text
            continue
        values = split_or(value)
        condition: ColumnElement[bool] | None = None
        if name == "status":
            wanted = set()
            for token in (parse_token(v, name) for v in values):
                if token.system not in (None, TASK_STATUS_SYSTEM) or token.code is None:
                    continue
                wanted.add(token.code)
            statuses &= wanted
        elif name == "code":
            types = []
            for token in (parse_token(v, name) for v in values):
                if token.system in (None, settings.fhir_task_type_system) and token.code is not None:
                    types.append(token.code)
            condition = Task.type.in_(types) if types else false()
        elif name == "owner":
            condition = Task.owner.in_([_owner_value(v) for v in values])
        elif name == "patient":
            ids = []
            for v in values:
                try:
                    ids.append(uuid.UUID(parse_reference(v, "Patient", "patient")))
                except ValueError:
                    continue  # a well-formed id carecoord never issued: no match
            condition = Task.patient_id.in_(ids) if ids else false()
        else:
            column = Task.due_at if name == "period" else Task.updated_at
            criteria = [parse_date_criterion(v, zone, name) for v in values]
            condition = or_(*[_point(column, period_predicate(c)) for c in criteria])
        if condition is not None:
            query.filters.extra.append(condition)
        query.applied.append((name, value))
    query.filters.statuses = sorted(statuses)
    if query.cursor is not None and (query.cursor.sort, query.cursor.order) != (query.sort, query.order):
        raise SearchParamError("_cursor", "the cursor belongs to another _sort")
    return query


@router.get("/Task", summary="Search Tasks")
async def search_tasks(
    request: Request,
    principal: CurrentPrincipal,
    owner: Annotated[str | None, Query(description="the owner's user id (token sub) or Practitioner/{id}")] = None,
    status: Annotated[str | None, Query(description="Task.status")] = None,
    patient: Annotated[str | None, Query(description="Patient id, `Patient/id` or URL")] = None,
    code: Annotated[str | None, Query(description="task type: `code` or `system|code`")] = None,
    period: Annotated[list[str] | None, Query(description="due time, with prefix, e.g. le2026-12-01")] = None,
    last_updated: Annotated[list[str] | None, Query(alias="_lastUpdated", description="with prefix")] = None,
    sort: Annotated[str | None, Query(alias="_sort", description="period, _lastUpdated, authored-on, priority")] = None,
    count: Annotated[str | None, Query(alias="_count", description=f"page size, max {MAX_COUNT}")] = None,
) -> JSONResponse:
    # Declared parameters document the API; the query string is parsed in full below (FHIR rules).
    _require_role(principal)
    settings = _settings(request)
    strict = handling_preference(request.headers.get("prefer")) == "strict"
    try:
        query = parse_task_query(list(request.query_params.multi_items()), settings, strict=strict)
    except SearchParamError as exc:
        raise Problem(400, "Invalid search", exc.message, field=exc.param) from None
    conditions = [*filter_conditions(query.filters, utcnow(), timedelta(0)), *task_conditions(principal, settings)]
    async with request.app.state.runtime.sessions() as session, session.begin():
        found = await task_page(
            session,
            conditions,
            sort=query.sort,
            order=query.order,
            limit=query.count,
            cursor=query.cursor,
            count_cap=None,
            with_patient=False,
        )
        tasks = [task for task, _ in found.rows]
        resources = [_render(request, task) for task in tasks]
        audit(
            session,
            request,
            principal,
            action=AuditAction.READ,
            resource_type="Task",
            patient_ids=[t.patient_id for t in tasks],
        )

    base = fhir_base(request)
    params = [*query.applied, *([("_sort", query.sort_text)] if query.sort_text else []), ("_count", str(query.count))]
    self_params = params + ([("_cursor", query.cursor.encode())] if query.cursor else [])
    links = [{"relation": "self", "url": _url(base, self_params)}]
    if found.next_cursor is not None:
        links.append({"relation": "next", "url": _url(base, [*params, ("_cursor", found.next_cursor.encode())])})
    entries = search_entries(base, "Task", resources, query.ignored)
    return fhir_response(searchset(found.total or 0, links, entries))


def _url(base: str, params: list[tuple[str, str]]) -> str:
    query = urlencode(params)
    return f"{base}/Task?{query}" if query else f"{base}/Task"


# --- update ---------------------------------------------------------------------------------------

IfMatch = Annotated[str | None, Header(alias="If-Match", description='W/"<versionId>"')]


async def _body(request: Request) -> Any:
    return await json_body(request)


async def _update(
    request: Request, principal: Principal, resource_id: str, if_match: str | None, patch: bool
) -> JSONResponse:
    _require_role(principal)
    settings = _settings(request)
    try:
        expected = parse_etag(if_match)
    except ValueError as exc:
        raise Problem(412, "Precondition Failed", str(exc), field="If-Match") from None
    body = await _body(request)
    if if_match is None:
        # Versioned update (the CapabilityStatement says so): a PUT of a stale body without If-Match would
        # silently undo a colleague's claim, since an absent owner reads as "release".
        raise Problem(
            428,
            "Precondition Required",
            'If-Match is required: the ETag W/"<version>" of the task as read',
            field="If-Match",
        )
    key = _task_id(resource_id)
    scope = task_conditions(principal, settings)
    problem: Problem | None = None
    resource: dict[str, Any] | None = None
    async with request.app.state.runtime.sessions() as session, session.begin():
        task, visible = (None, False)
        if key is not None:
            task, visible = await load_for_update(session, key, scope)
        if task is None or not visible:
            problem = _not_found(resource_id)
        elif expected is not None and expected != task.version:
            problem = Problem(412, "Precondition Failed", f"the task is at version {task.version}", field="If-Match")
        else:
            problem, resource = await _apply(request, session, principal, task, body, patch=patch)
        audit(
            session,
            request,
            principal,
            action=AuditAction.UPDATE,
            resource_type="Task",
            patient_ids=[task.patient_id] if task is not None else [],
            outcome=AuditOutcome.SUCCESS if problem is None else AuditOutcome.MINOR_FAILURE,
        )
    if problem is not None:
        raise problem
    assert resource is not None
    return fhir_response(resource, headers=_headers(resource))


_TITLES = {403: "Forbidden", 409: "Conflict", 412: "Precondition Failed", 422: "Unprocessable update"}


async def _apply(
    request: Request,
    session: AsyncSession,
    principal: Principal,
    task: Task,
    body: Any,
    *,
    patch: bool,
) -> tuple[Problem | None, dict[str, Any] | None]:
    settings = _settings(request)
    current = _render(request, task)
    try:
        proposed = apply_patch(current, body) if patch else body
        wanted = wanted_changes(current, proposed, resource_id=str(task.id), user_system=settings.fhir_user_system)
    except PatchError as exc:
        return Problem(422, "Unprocessable update", str(exc), field="Task"), None
    except UpdateError as exc:
        return Problem(422, "Unprocessable update", exc.message, field=exc.expressions[0]), None
    requests = action_requests(
        status=task.status,
        owner=task.owner,
        wanted=wanted,
        actor=principal.subject,
        supervisor=is_supervisor(principal, settings),
    )
    refused = await apply_to_locked(session, task, requests)
    if refused is not None:
        expression = {"owner": "Task.owner", "status": "Task.status"}.get(refused.field, refused.field)
        return Problem(refused.status, _TITLES.get(refused.status, "Conflict"), refused.message, field=expression), None
    return None, _render(request, task)


@router.put("/Task/{resource_id}", summary="Update a Task's status and owner")
async def update_task(
    resource_id: str, request: Request, principal: CurrentPrincipal, if_match: IfMatch = None
) -> JSONResponse:
    return await _update(request, principal, resource_id, if_match, patch=False)


@router.patch("/Task/{resource_id}", summary="JSON Patch a Task's status and owner")
async def patch_task(
    resource_id: str, request: Request, principal: CurrentPrincipal, if_match: IfMatch = None
) -> JSONResponse:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != JSON_PATCH:
        raise Problem(415, "Unsupported Media Type", f"PATCH takes {JSON_PATCH}", field="Content-Type")
    return await _update(request, principal, resource_id, if_match, patch=True)
