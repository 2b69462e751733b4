"""The benchmark data set shared by bench/api.py (worklists) and bench/dashboard.py (quality measures).

A realistic task mix loaded with binary COPY: ~85 % closed history (completed, cancelled, failed) and
~15 % open work spread over the practices (teams) and the five facilitator roles, due times from a year
ago to a month ahead, a quarter of the open tasks claimed by someone; then VACUUM ANALYZE, as autovacuum
would on a live system. An `Enrichment` adds rows the dashboard needs (the stays tasks hang on, their
completion history, rosters, screenings) around the same tasks without changing them.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from alembic.script import ScriptDirectory
from rich.console import Console
from rich.progress import Progress
from sqlalchemy import Table, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.bulk import insert_rows
from app.db.migrate import alembic_config, recreate_schema
from app.db.models import Patient, Task
from app.db.session import session_factory

console = Console(stderr=True)

ROLES = ("PMC", "BHCF", "PCF", "RN", "PHARMD")
# task type -> (role, share of all tasks)
TYPES = (
    ("post-discharge-contact", "PMC", 0.34),
    ("medication-reconciliation", "RN", 0.24),
    ("post-ed-contact", "PMC", 0.14),
    ("fuh-follow-up", "BHCF", 0.05),
    ("bh-referral", "BHCF", 0.06),
    ("new-member-outreach", "PCF", 0.12),
    ("admission-notification", "PMC", 0.05),
)
CLOSED = (("completed", 0.70), ("cancelled", 0.11), ("failed", 0.04))
OPEN = (("ready", 0.10), ("in-progress", 0.04), ("requested", 0.01))
PRIORITIES = ("routine", "urgent", "asap")
CHUNK = 50_000


@dataclass(frozen=True)
class Load:
    tasks: int
    patients: int
    teams: int
    seed: int


def teams(n: int) -> list[str]:
    return [f"PRACTICE-{i:03d}" for i in range(n)]


def _pick(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([v for v, _ in weighted], weights=[w for _, w in weighted])[0]


def task_rows(load: Load, patient_ids: list[uuid.UUID], start: int, count: int, now: datetime) -> list[dict[str, Any]]:
    rng = random.Random(load.seed * 1_000_003 + start)
    team_names = teams(load.teams)
    statuses = (*CLOSED, *OPEN)
    rows = []
    for n in range(start, start + count):
        task_type, role, _ = rng.choices(TYPES, weights=[t[2] for t in TYPES])[0]
        if task_type == "medication-reconciliation" and rng.random() < 0.2:
            role = "PHARMD"
        status = _pick(rng, statuses)
        open_ = status in ("ready", "in-progress", "requested")
        due = (
            now + timedelta(minutes=rng.randint(-60 * 24 * 14, 60 * 24 * 30))
            if open_
            else now - timedelta(minutes=rng.randint(60, 60 * 24 * 365))
        )
        created = due - timedelta(days=7)
        rows.append(
            {
                "id": uuid.UUID(int=rng.getrandbits(128), version=4),
                "dedupe_key": f"bench:{n}",
                "type": task_type,
                "status": status,
                "priority": rng.choices(PRIORITIES, weights=(0.85, 0.12, 0.03))[0],
                "role": role,
                "team": None if rng.random() < 0.02 else rng.choice(team_names),
                "owner": f"user-{rng.randrange(400)}" if status == "in-progress" or rng.random() < 0.1 else None,
                "patient_id": rng.choice(patient_ids),
                "encounter_id": None,
                "due_at": due,
                "due_basis": {"policy": "calendar", "anchor": "discharge", "days": 7},
                "route_basis": {"population": "adult", "role": role},
                "failed_attempts": rng.choice((0, 0, 0, 1, 2)),
                "escalated_at": due if open_ and due < now and rng.random() < 0.5 else None,
                "superseded_by_encounter_id": None,
                "rule_id": task_type,
                "rule_version": "1",
                "triggering_event_ids": [str(uuid.UUID(int=rng.getrandbits(128), version=4))],
                "version": 1,
                "created_at": created,
                "updated_at": created,
            }
        )
    return rows


async def loaded_counts(engine: AsyncEngine) -> tuple[int, int] | None:
    """(tasks, patients) of a database loaded at the current schema; None otherwise."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    try:
        async with engine.connect() as conn:
            if (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar() != head:
                return None
            tasks = (await conn.execute(select(func.count()).select_from(Task))).scalar_one()
            patients = (await conn.execute(select(func.count()).select_from(Patient))).scalar_one()
    except Exception:  # no schema yet
        return None
    return tasks, patients


Rows = list[tuple[Table, list[dict[str, Any]]]]


class Enrichment(Protocol):
    """Extra rows around the generated data; each method gets its own seeded random source."""

    def for_patients(self, patient_ids: Sequence[uuid.UUID], rng: random.Random, now: datetime) -> Rows: ...

    def for_tasks(self, tasks: list[dict[str, Any]], rng: random.Random, now: datetime) -> tuple[Rows, Rows]:
        """(rows inserted before the chunk's tasks, e.g. the stays they reference; rows after them);
        may set columns of the task rows (encounter_id, part2)."""
        ...


async def _insert(sessions: Any, rows: Rows) -> None:
    async with sessions() as session, session.begin():
        for table, batch in rows:
            await insert_rows(session, table, batch)


async def load_data(engine: AsyncEngine, load: Load, enrichment: Enrichment | None = None) -> float:
    started = time.perf_counter()
    await recreate_schema(engine)
    sessions = session_factory(engine)
    rng = random.Random(load.seed)
    now = datetime.now(UTC)
    patient_ids = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(load.patients)]
    with Progress(console=console) as progress:
        p = progress.add_task("patients", total=load.patients)
        for start in range(0, load.patients, CHUNK):
            ids = patient_ids[start : start + CHUNK]
            rows = [
                {
                    "id": pid,
                    "family_name": f"FAMILY{i}",
                    "given_name": f"GIVEN{i}",
                    "birth_date": date(1940, 1, 1) + timedelta(days=rng.randrange(80 * 365)),
                    "sex": rng.choice(("F", "M")),
                    "deceased": False,
                    "created_at": now,
                    "updated_at": now,
                }
                for i, pid in enumerate(ids, start)
            ]
            async with sessions() as session, session.begin():
                await insert_rows(session, Patient.__table__, rows)
            if enrichment is not None:
                await _insert(sessions, enrichment.for_patients(ids, random.Random(load.seed + start), now))
            progress.advance(p, len(rows))
        t = progress.add_task("tasks", total=load.tasks)
        for start in range(0, load.tasks, CHUNK):
            rows = task_rows(load, patient_ids, start, min(CHUNK, load.tasks - start), now)
            before: Rows = []
            after: Rows = []
            if enrichment is not None:
                before, after = enrichment.for_tasks(rows, random.Random(load.seed * 7 + start), now)
            await _insert(sessions, [*before, (Task.__table__, rows), *after])
            progress.advance(t, len(rows))
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM ANALYZE"))
    return time.perf_counter() - started
