"""Audit trail of patient-data access (who, what, when, outcome); FHIR AuditEvent semantics."""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar
from enum import StrEnum
from typing import Any

from sqlalchemy import bindparam, insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import AuditEvent, utcnow
from app.db.prepared import Prepared

# The HTTP client of the request being served (address, user agent), set once authentication succeeds,
# so every audit record of the request names its client without each call passing it.
REQUEST_CLIENT: ContextVar[tuple[str | None, str | None]] = ContextVar("request_client", default=(None, None))


class AuditAction(StrEnum):  # FHIR AuditEvent.action
    CREATE = "C"
    READ = "R"
    UPDATE = "U"
    DELETE = "D"
    EXECUTE = "E"


class AuditOutcome(StrEnum):  # FHIR AuditEvent.outcome
    SUCCESS = "0"
    MINOR_FAILURE = "4"
    SERIOUS_FAILURE = "8"


def record_audit(session: AsyncSession, actor: str, roles: Iterable[str], **details: Any) -> None:
    """Add the audit record to the session's transaction; `details` are `audit_values`' keywords."""
    session.add(AuditEvent(**audit_values(actor, roles, **details)))


def audit_values(
    actor: str,
    roles: Iterable[str],
    *,
    action: AuditAction,
    resource_type: str,
    request: str,
    patient_ids: Iterable[str] = (),
    outcome: AuditOutcome = AuditOutcome.SUCCESS,
    client_ip: str | None = None,
    user_agent: str | None = None,
) -> dict[str, Any]:
    """The columns of one audit record (all but the generated id)."""
    default_ip, default_agent = REQUEST_CLIENT.get()
    client_ip, user_agent = client_ip or default_ip, user_agent or default_agent
    return {
        "recorded_at": utcnow(),
        "actor": actor[:255],  # a token's `sub` of any length must not fail the record
        "roles": sorted(roles),
        "action": action.value,
        "resource_type": resource_type,
        "request": request[:255],
        "outcome": outcome.value,
        "patient_ids": sorted(set(patient_ids)),
        "client_ip": client_ip[:64] if client_ip else None,
        "user_agent": user_agent[:255] if user_agent else None,
    }


# One audit record, for reads that run outside an ORM session (the worklist page, app/api/worklist_query.py).
_AUDIT_COLUMNS = [c for c in AuditEvent.__table__.c if not c.primary_key]
AUDIT_INSERT = Prepared(
    insert(AuditEvent).values({c.name: bindparam(c.name, type_=c.type) for c in _AUDIT_COLUMNS}).inline()
)
