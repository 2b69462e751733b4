"""Who is attributed: the query rules ask ("is patient P on a current roster at instant T, to which
practice, PCP and program?") and the member lists the exports send."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Patient, RosterMember, Task
from app.roster.reconcile import MemberStatus
from app.tasks.lifecycle import ACTIVE_STATUSES


@dataclass(frozen=True, slots=True)
class Attribution:
    sender: str
    member_id: str
    practice: str | None
    pcp_npi: str | None
    program: str | None
    bh_program: bool
    risk_tier: str | None
    enrollment_start: date | None
    enrollment_end: date | None


def _enrolled_on(day: date) -> Any:
    m = RosterMember
    return and_(
        or_(m.enrollment_start.is_(None), m.enrollment_start <= day),
        or_(m.enrollment_end.is_(None), m.enrollment_end >= day),
    )


async def attribution_at(
    session: AsyncSession, patient_id: uuid.UUID, at: datetime, zone: ZoneInfo
) -> list[Attribution]:
    """Enrollments covering instant `at` (enrollment dates are days on the facility's calendar).

    Empty = not attributed. Records merged into the patient (A40) count as the patient. Membership
    rows keep a terminated member's dates, so a past instant inside the enrollment still answers yes.
    """
    day = at.astimezone(zone).date()
    merged = select(Patient.id).where(Patient.merged_into_id == patient_id)
    query = (
        select(RosterMember)
        .where(or_(RosterMember.patient_id == patient_id, RosterMember.patient_id.in_(merged)), _enrolled_on(day))
        .order_by(RosterMember.sender, RosterMember.member_id)
    )
    rows = (await session.execute(query)).scalars().all()
    return [
        Attribution(
            sender=r.sender,
            member_id=r.member_id,
            practice=r.practice,
            pcp_npi=r.pcp_npi,
            program=r.program,
            bh_program=r.bh_program,
            risk_tier=r.risk_tier,
            enrollment_start=r.enrollment_start,
            enrollment_end=r.enrollment_end,
        )
        for r in rows
    ]


async def active_members(session: AsyncSession, sender: str | None) -> AsyncIterator[tuple[RosterMember, int]]:
    """Active members (of one sender, or all) with their count of open tasks, streamed in member order."""
    open_tasks = (
        select(Task.patient_id, func.count().label("n"))
        .where(Task.status.in_(ACTIVE_STATUSES))
        .group_by(Task.patient_id)
        .subquery()
    )
    query = (
        select(RosterMember, func.coalesce(open_tasks.c.n, 0))
        .outerjoin(open_tasks, open_tasks.c.patient_id == RosterMember.patient_id)
        .where(RosterMember.status == MemberStatus.ACTIVE)
        .order_by(RosterMember.sender, RosterMember.member_id)
    )
    if sender is not None:
        query = query.where(RosterMember.sender == sender)
    result = await session.stream(query.execution_options(yield_per=5000))
    async for member, count in result:
        yield member, int(count)
