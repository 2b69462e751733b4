"""One call per audited request: who (the token), what (resource type, patients), how (the request
line), from where (client address and user agent) and with what outcome. Endpoints call `audit`
inside the transaction that read or wrote the data, so the record commits with it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.auth import Principal
from app.state.audit import AuditAction, AuditOutcome, record_audit

__all__ = ["AuditAction", "AuditOutcome", "audit", "request_line"]


def request_line(request: Request, detail: str | None = None) -> str:
    line = f"{request.method} {request.url.path}"
    if request.url.query:
        line += f"?{request.url.query}"
    return f"{line} {detail}" if detail else line


def audit(
    session: AsyncSession,
    request: Request,
    principal: Principal,
    *,
    action: AuditAction,
    resource_type: str,
    patient_ids: Iterable[Any] = (),
    outcome: AuditOutcome = AuditOutcome.SUCCESS,
    detail: str | None = None,
) -> None:
    record_audit(
        session,
        principal.subject,
        principal.roles,
        action=action,
        resource_type=resource_type,
        request=request_line(request, detail),
        patient_ids=[str(p) for p in patient_ids if p is not None],
        outcome=outcome,
        client_ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )
