"""What the rules need to know about patients beyond the event: their open tasks, whether they are
in the behavioural-health population, and their attribution. Set-based, so the batch path reads a
whole poll's patients in a few queries and the per-message path reads one the same way."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Encounter, Task
from app.state.tasks import ACTIVE_STATUSES


@dataclass(slots=True)
class PatientContexts:
    open_tasks: dict[uuid.UUID, list[Task]] = field(default_factory=lambda: defaultdict(list))
    behavioral_health: set[uuid.UUID] = field(default_factory=set)
    # patient -> attributed practice; absent = not on the current roster. Filled from membership
    # once rosters exist (issue 7); until then nobody is attributed.
    attributed_practice: dict[uuid.UUID, str | None] = field(default_factory=dict)


async def load_contexts(session: AsyncSession, patient_ids: Collection[uuid.UUID]) -> PatientContexts:
    found = PatientContexts()
    if not patient_ids:
        return found
    ids = set(patient_ids)
    tasks = await session.execute(select(Task).where(Task.patient_id.in_(ids), Task.status.in_(ACTIVE_STATUSES)))
    for task in tasks.scalars():
        found.open_tasks[task.patient_id].append(task)
    bh = await session.execute(
        select(Encounter.patient_id).where(Encounter.patient_id.in_(ids), Encounter.behavioral_health.is_(True))
    )
    found.behavioral_health.update(bh.scalars())
    return found
