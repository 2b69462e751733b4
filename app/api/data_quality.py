"""Data-quality findings for data staff: applied input that looks wrong (app/state/data_quality.py).

`admin_roles` only, like dead letters; every call audited (R). A finding names events and the field,
never a value, so no payload permission is involved; findings on a 42 CFR Part 2 encounter are left
out (rows and total) for callers without the Part 2 permission.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from app.api.auth import Principal, may_see_part2, role_gate
from app.state.audit import AuditAction, record_audit
from app.state.data_quality import list_findings

router = APIRouter(tags=["data quality"])

PATH = "/admin/data-quality"
AUDIT_RESOURCE = "DataQualityFinding"

AdminPrincipal = Annotated[Principal, Depends(role_gate("admin_roles", what="data-quality findings"))]


class FindingOut(BaseModel):
    id: uuid.UUID
    kind: str
    source: str
    message: str | None  # what the sender calls the message: "hl7v2|<facility>|<MSH-10>", "davinci|<Bundle.id>"
    inbound_event_id: uuid.UUID
    related_event_id: uuid.UUID | None
    field: str
    detail: str
    topic: str | None
    partition: int | None
    offset: int | None
    created_at: datetime


class FindingList(BaseModel):
    items: list[FindingOut]
    count: int
    total: int


@router.get(PATH, response_model=FindingList)
async def list_findings_endpoint(
    request: Request,
    principal: AdminPrincipal,
    kind: Annotated[Literal["control-id-reused", "event-time-ahead"] | None, Query(description="finding kind")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1, description="rows to skip")] = 0,
) -> FindingList:
    include_part2 = may_see_part2(principal, request.app.state.settings)
    async with request.app.state.runtime.sessions() as session, session.begin():
        page = await list_findings(session, kind=kind, include_part2=include_part2, limit=limit, offset=offset)
        record_audit(
            session,
            principal.subject,
            principal.roles,
            action=AuditAction.READ,
            resource_type=AUDIT_RESOURCE,
            request=f"GET {PATH} kind={kind}" if kind else f"GET {PATH}",
        )
    items = [FindingOut.model_validate(r, from_attributes=True) for r in page.rows]
    return FindingList(items=items, count=len(items), total=page.total)
