"""Enrollee files over HTTP: upload a roster (an import job), follow the job, fetch its change report,
download exports. Roster roles (CARECOORD_ROSTER_ROLES) or admins only; every call is audited."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, StreamingResponse

from app import clock
from app.api.auth import Principal, role_gate
from app.api.downloads import attachment
from app.api.problems import Problem
from app.api.request_body import body_cap
from app.api.scopes import scoped
from app.ingest.roster_files import EXPORT_KINDS, change_report_lines, export_lines, import_summary
from app.ingest.roster_import import ImportRequest, RosterImporter
from app.roster.mapping import MappingError
from app.state import rosters as store
from app.state.audit import AuditAction, record_audit

log = logging.getLogger(__name__)
router = APIRouter(tags=["rosters"])
UPLOAD_CHUNK = 1 << 20
MAX_ERRORS_SHOWN = 1000


RosterPrincipal = Annotated[Principal, Depends(role_gate("roster_roles", "admin_roles", what="enrollee files"))]


def _importer(request: Request) -> RosterImporter:
    state = request.app.state
    if getattr(state, "roster_importer", None) is None:
        runtime = state.runtime
        state.roster_importer = RosterImporter(runtime.settings, runtime.sessions, runtime.rule_engine, runtime.zone)
        state.roster_jobs = set()
    return state.roster_importer


async def _audit(request: Request, principal: Principal, action: AuditAction, resource: str, what: str) -> None:
    async with request.app.state.runtime.sessions() as session, session.begin():
        record_audit(session, principal.subject, principal.roles, action=action, resource_type=resource, request=what)


def _job_body(job: Any) -> dict[str, Any]:
    body = import_summary(job)
    base = f"/rosters/imports/{job.id}"
    body["links"] = {
        "self": base,
        "changes": f"{base}/changes?format=json",
        "changes_csv": f"{base}/changes?format=csv",
    }
    return body


async def _save_upload(upload: UploadFile, folder: Path, limit: int) -> Path:
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    target = folder / f"{uuid.uuid4().hex}.upload"
    size = 0
    with target.open("wb") as f:
        while chunk := await upload.read(UPLOAD_CHUNK):
            size += len(chunk)
            if size > limit:
                f.close()
                target.unlink()
                raise Problem(413, "Payload too large", f"roster larger than {limit} bytes", field="file")
            f.write(chunk)
    return target


@router.post("/rosters/imports", status_code=202, dependencies=scoped("Group"))
@body_cap("roster_upload_max_bytes")
async def upload_roster(
    request: Request,
    principal: RosterPrincipal,
    file: Annotated[UploadFile, File(description="the roster: delimited text or ATR Group JSON")],
    format: Annotated[Literal["csv", "atr"] | None, Form(description="default: by file name (.json = atr)")] = None,
    mapping: Annotated[str, Form()] = "default",
    sender: Annotated[str | None, Form(max_length=64)] = None,
    as_of: Annotated[date | None, Form(description="the roster's effective date (default today)")] = None,
) -> JSONResponse:
    importer = _importer(request)
    try:
        importer.mapping(mapping)
    except MappingError as exc:
        raise Problem(422, "Request is not valid", str(exc), field="mapping") from None
    settings = request.app.state.settings
    saved = await _save_upload(file, settings.var_dir / "roster-uploads", settings.roster_upload_max_bytes)
    req = ImportRequest(
        path=saved,
        filename=file.filename or saved.name,
        format=format,
        mapping=mapping,
        sender=sender,
        source="api",
        as_of=as_of,
    )
    job, duplicate = await importer.register(req)
    await _audit(request, principal, AuditAction.CREATE, "RosterImport", f"POST /rosters/imports {job.id}")
    if duplicate:
        saved.unlink(missing_ok=True)
        return JSONResponse({**_job_body(job), "duplicate": True}, status_code=200)
    _spawn(request, importer, job.id, req)
    return JSONResponse(
        {**_job_body(job), "duplicate": False},
        status_code=202,
        headers={"Location": f"/rosters/imports/{job.id}"},
    )


def _held_upload(settings: Any, import_id: uuid.UUID) -> Path:
    return settings.var_dir / "roster-uploads" / "held" / f"{import_id}.upload"


async def _process(importer: RosterImporter, import_id: uuid.UUID, req: ImportRequest) -> None:
    """Run an upload's import; a held file is kept (for data staff's decision), any other is deleted."""
    held = _held_upload(importer.settings, import_id)
    kept = False
    try:
        outcome = await importer.process(import_id, req)
        if outcome.status == store.HELD:
            held.parent.mkdir(parents=True, exist_ok=True)
            if req.path != held:
                req.path.replace(held)
            kept = True
    except Exception:
        log.warning("roster upload processing failed", extra={"import_id": str(import_id)})
        kept = req.path == held  # a confirmed file that failed stays for a retry
    finally:
        if not kept:
            req.path.unlink(missing_ok=True)


def _spawn(request: Request, importer: RosterImporter, import_id: uuid.UUID, req: ImportRequest) -> None:
    task = asyncio.create_task(_process(importer, import_id, req))
    request.app.state.roster_jobs.add(task)
    task.add_done_callback(request.app.state.roster_jobs.discard)


@router.get("/rosters/imports", dependencies=scoped("Group"))
async def list_roster_imports(
    request: Request,
    principal: RosterPrincipal,
    status: Annotated[Literal["held"], Query(description="held: files waiting for data staff to confirm")] = "held",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """Import jobs in a status: today the held files (a mass termination waiting for confirmation)."""
    async with request.app.state.runtime.sessions() as session, session.begin():
        jobs = await store.imports_with_status(session, status, limit)
        record_audit(
            session,
            principal.subject,
            principal.roles,
            action=AuditAction.READ,
            resource_type="RosterImport",
            request=f"GET /rosters/imports?status={status}",
        )
    return {"items": [_job_body(job) for job in jobs], "count": len(jobs)}


async def _decide(request: Request, principal: Principal, import_id: uuid.UUID, verb: str) -> dict[str, Any]:
    importer = _importer(request)
    status = store.CONFIRMED if verb == "confirm" else store.REJECTED
    reason = None if verb == "confirm" else f"rejected by data staff ({principal.subject}) after a hold"
    async with request.app.state.runtime.sessions() as session, session.begin():
        decided = await store.decide_held(session, import_id, status, reason)
        job = await store.get_import(session, import_id)
        record_audit(
            session,
            principal.subject,
            principal.roles,
            action=AuditAction.UPDATE,
            resource_type="RosterImport",
            request=f"POST /rosters/imports/{import_id}/{verb}",
        )
    if job is None:
        raise Problem(404, "Not found", f"no roster import {import_id}", field="import_id")
    if not decided:
        raise Problem(409, "Conflict", f"the import is {job.status}, not held", field="status")
    held = _held_upload(importer.settings, import_id)
    if status == store.CONFIRMED and held.exists():  # an API upload: apply it here; inbox files: the watcher
        fmt: Any = job.format
        req = ImportRequest(held, job.filename, fmt, job.mapping, job.sender, "api", job.as_of)
        _spawn(request, importer, import_id, req)
    elif status == store.REJECTED:
        held.unlink(missing_ok=True)
    return _job_body(job)


@router.post("/rosters/imports/{import_id}/confirm", dependencies=scoped("Group"))
async def confirm_roster_import(request: Request, principal: RosterPrincipal, import_id: uuid.UUID) -> dict[str, Any]:
    """Apply a held file as it is (the mass termination was intended)."""
    return await _decide(request, principal, import_id, "confirm")


@router.post("/rosters/imports/{import_id}/reject", dependencies=scoped("Group"))
async def reject_roster_import(request: Request, principal: RosterPrincipal, import_id: uuid.UUID) -> dict[str, Any]:
    """Refuse a held file: nothing is applied, the same bytes stay refused."""
    return await _decide(request, principal, import_id, "reject")


@router.get("/rosters/imports/{import_id}", dependencies=scoped("Group"))
async def get_roster_import(request: Request, principal: RosterPrincipal, import_id: uuid.UUID) -> dict[str, Any]:
    async with request.app.state.runtime.sessions() as session, session.begin():
        job = await store.get_import(session, import_id)
        if job is None:
            raise Problem(404, "Not found", f"no roster import {import_id}", field="import_id")
        errors = await store.import_errors(session, import_id, MAX_ERRORS_SHOWN)
        record_audit(
            session,
            principal.subject,
            principal.roles,
            action=AuditAction.READ,
            resource_type="RosterImport",
            request=f"GET /rosters/imports/{import_id}",
        )
    body = _job_body(job)
    body["errors"] = [{"line": e.line, "field": e.field, "reason": e.reason} for e in errors]
    body["errors_truncated"] = job.error_rows > len(errors)
    return body


@router.get("/rosters/imports/{import_id}/changes", dependencies=scoped("Group"))
async def get_roster_changes(
    request: Request,
    principal: RosterPrincipal,
    import_id: uuid.UUID,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> StreamingResponse:
    sessions = request.app.state.runtime.sessions
    async with sessions() as session:
        if await store.get_import(session, import_id) is None:
            raise Problem(404, "Not found", f"no roster import {import_id}", field="import_id")
    await _audit(request, principal, AuditAction.READ, "RosterChange", f"GET /rosters/imports/{import_id}/changes")
    media = "text/csv; charset=utf-8" if format == "csv" else "application/json"
    return StreamingResponse(change_report_lines(sessions, import_id, format), media_type=media)


@router.get("/rosters/exports/{kind}", dependencies=scoped("Group"))
async def get_roster_export(
    request: Request,
    principal: RosterPrincipal,
    kind: str,
    sender: Annotated[str | None, Query(max_length=64, description="one sender's members (default: all)")] = None,
) -> StreamingResponse:
    if kind not in EXPORT_KINDS:
        raise Problem(404, "Not found", f"no export {kind!r} (known: {', '.join(EXPORT_KINDS)})", field="kind")
    await _audit(request, principal, AuditAction.READ, "RosterMember", f"GET /rosters/exports/{kind} sender={sender}")
    importer = _importer(request)
    media = "application/fhir+json" if kind == "atr" else "text/csv; charset=utf-8"
    today = clock.today(importer.zone)
    name = f"{kind}-{sender or 'all'}-{today.isoformat()}.{'json' if kind == 'atr' else 'csv'}"
    return StreamingResponse(
        export_lines(importer.sessions, kind, sender, today),
        media_type=media,
        headers={"Content-Disposition": attachment(name)},
    )
