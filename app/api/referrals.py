"""`POST /tasks/{id}/business-status`: a facilitator records a referral loop milestone.

The BH referral task carries its loop as FHIR Task.businessStatus (app/tasks/referral.py): requested
-> sent -> scheduled -> first-visit -> summary-received (closed). Feeds move it too (a BH visit, a
consult note); here a person records what no feed brings: the referral sent, the appointment booked,
or a visit or summary learned of by phone or fax. Sending starts the loop's clock (30 days, urgent 7).
Scoped like every task endpoint (app/api/access.py: 404 for a task out of scope), audited.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy import select

from app.api.access import may_work_on, task_conditions
from app.api.auth import CurrentPrincipal
from app.api.problems import Problem
from app.api.scopes import scoped
from app.db.models import Task, utcnow
from app.rules.config import LoopSpec
from app.rules.engine import RuleEngine
from app.state.audit import AuditAction, AuditOutcome, record_audit
from app.state.tasks import set_business_status
from app.tasks.lifecycle import TransitionError
from app.tasks.referral import BusinessStatus, due_once_sent, loop_move

router = APIRouter(tags=["tasks"], dependencies=scoped("Task"))  # SMART scope: docs/security.md (u)

# What a person may record; `requested` is where every referral starts.
Milestone = Literal["sent", "scheduled", "first-visit", "summary-received"]


class BusinessStatusIn(BaseModel):
    business_status: Milestone = Field(description="the milestone reached (FHIR Task.businessStatus)")
    note: str | None = Field(default=None, max_length=2000, description="kept in the task history; never logged")


class ReferralOut(BaseModel):
    id: uuid.UUID
    type: str
    status: str = Field(description="FHIR Task.status: in-progress while the loop is open, completed when closed")
    business_status: str
    priority: str
    due_at: datetime = Field(description="the referral sent by; once sent, the loop closed by")
    due_basis: dict[str, Any]
    version: int


@router.post("/tasks/{task_id}/business-status", response_model=ReferralOut)
async def record_milestone(
    request: Request, principal: CurrentPrincipal, task_id: uuid.UUID, body: BusinessStatusIn
) -> ReferralOut:
    """Move a referral loop forward. 409 (field `business_status`) for a task that is not a referral
    loop, a milestone already passed, a later one before the referral is sent, or a closed task."""
    runtime = request.app.state.runtime
    refused: Problem | None = None
    out: ReferralOut | None = None
    what = f"POST /tasks/{task_id}/business-status"
    async with runtime.sessions() as session, session.begin():
        scope = task_conditions(principal, request.app.state.settings)
        task = (
            await session.execute(select(Task).where(Task.id == task_id, *scope).with_for_update())
        ).scalar_one_or_none()
        record_audit(
            session,
            principal.subject,
            principal.roles,
            action=AuditAction.UPDATE,
            resource_type="Task",
            request=what,
            patient_ids=[str(task.patient_id)] if task is not None and task.patient_id else [],
            outcome=AuditOutcome.SUCCESS if task is not None else AuditOutcome.MINOR_FAILURE,
        )
        if task is not None and not may_work_on(task, principal, request.app.state.settings):
            refused = Problem(409, "Conflict", "the task is owned by someone else", field="owner")
        elif task is not None:
            try:
                move = loop_move(task.status, task.business_status, BusinessStatus(body.business_status))
            except TransitionError as exc:
                refused = Problem(409, "Conflict", str(exc), field="business_status")
            else:
                detail: dict[str, Any] = {"note": body.note} if body.note else {}
                if move.business_status is BusinessStatus.SENT:
                    default_days = _loop_days(runtime.rule_engine, task.rule_id)
                    task.due_at, task.due_basis = due_once_sent(task.due_basis, utcnow(), runtime.zone, default_days)
                    task.escalated_at = None  # a new deadline: overdue again only once it passes
                    detail["due_at"] = task.due_at.isoformat()
                set_business_status(
                    session,
                    task,
                    business_status=move.business_status,
                    status=move.status,
                    actor=f"user:{principal.subject}",
                    detail=detail,
                )
                await session.flush()
                out = ReferralOut(
                    id=task.id,
                    type=task.type,
                    status=task.status,
                    business_status=task.business_status or "",
                    priority=task.priority,
                    due_at=task.due_at,
                    due_basis=task.due_basis,
                    version=task.version,
                )
    if refused is not None:
        raise refused
    if out is None:
        raise Problem(404, "Not Found", "no such task", field="task_id")
    return out


def _loop_days(engine: RuleEngine, rule_id: str) -> int:
    """The rule's loop window; the file default if the rule has since lost its loop."""
    rule = engine.rules_by_id.get(rule_id)
    return (rule.loop if rule is not None and rule.loop is not None else LoopSpec()).closed_within_days
