"""The worklist's statements built once per shape (app/api/worklist_query.py) return what the generic
task query returns (app/state/worklists.task_page with access.task_conditions, no ranges, nothing
cached) for many callers, filters, sorts and pages, on the real database (SQLite, or PostgreSQL by env).

Cases are drawn by hypothesis and run against one seeded table: a cached statement that leaked one
request's values into another, or a range split that dropped or doubled a row, shows up as a difference.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api.access import task_conditions
from app.api.auth import Principal
from app.api.worklist_query import PageQuery, page_statements, run_page
from app.db.models import Consent, Encounter, Patient, Task
from app.db.session import create_engine, session_factory
from app.settings import Settings
from app.state.worklists import TaskFilters, filter_conditions, task_page
from app.tasks.worklist import Order, SortKey

ROLES = ("PMC", "BHCF", "RN")
TEAMS = ("T1", "T2", "T3")
STATUSES = ("ready", "in-progress", "requested", "completed", "cancelled")
TYPES = ("post-discharge-contact", "medication-reconciliation", "bh-referral")
OWNERS = ("ann", "bob")
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
DUE_SOON = timedelta(days=1)


async def seed(engine: AsyncEngine) -> list[uuid.UUID]:
    """A small table with every dimension varied, ties in due times included (the id breaks them)."""
    rng = random.Random(11)
    sessions = session_factory(engine)
    async with sessions() as session, session.begin():
        patients = [Patient(family_name=f"P{i}", given_name="G") for i in range(12)]
        session.add_all(patients)
        await session.flush()
        part2_stay = Encounter(patient_id=patients[0].id, facility="F", status="finished", part2=True)
        session.add(part2_stay)
        session.add(
            Consent(
                patient_id=patients[1].id,
                scope="part2",
                status="active",
                period_start=NOW - timedelta(days=30),
                recorded_by="x",
                recorded_at=NOW,
                resource={},
            )
        )
        await session.flush()
        for i in range(160):
            patient = rng.choice(patients)
            session.add(
                Task(
                    dedupe_key=f"k{i}",
                    type=rng.choice(TYPES),
                    status=rng.choice(STATUSES),
                    priority=rng.choice(("routine", "urgent", "asap")),
                    role=rng.choice(ROLES),
                    team=rng.choice((*TEAMS, None)),
                    owner=rng.choice((*OWNERS, None)),
                    patient_id=patient.id,
                    encounter_id=part2_stay.id if patient is patients[0] and rng.random() < 0.5 else None,
                    due_at=NOW + timedelta(hours=rng.randrange(-72, 72, 12)),
                    due_basis={},
                    rule_id="r",
                    rule_version="1",
                    triggering_event_ids=[],
                    part2=patient is patients[1] and rng.random() < 0.5,
                    created_at=NOW - timedelta(hours=rng.randrange(0, 48, 6)),
                    updated_at=NOW - timedelta(hours=rng.randrange(0, 48, 6)),
                )
            )
    return [p.id for p in patients]


def subsets(values: tuple[str, ...]) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(values), unique=True, max_size=2)


CASES = st.fixed_dictionaries(
    {
        "roles": st.lists(st.sampled_from(ROLES), unique=True, min_size=0, max_size=3),
        "teams": subsets(TEAMS),
        "supervisor": st.booleans(),
        "part2": st.booleans(),
        "role_filter": subsets(ROLES),
        "team_filter": subsets(TEAMS),
        "pool_filter": st.booleans(),
        "statuses": st.lists(st.sampled_from(STATUSES), unique=True, min_size=1, max_size=3),
        "types": subsets(TYPES),
        "owners": subsets(OWNERS),
        "unowned": st.booleans(),
        "patients": st.lists(st.integers(0, 11), unique=True, max_size=2),
        "due_before": st.none() | st.integers(-48, 48),
        "due_after": st.none() | st.integers(-48, 48),
        "overdue": st.none() | st.booleans(),
        "due_soon": st.none() | st.booleans(),
        "sort": st.sampled_from(list(SortKey)),
        "order": st.sampled_from(list(Order)),
        "limit": st.sampled_from([0, 1, 3, 7, 50]),
        "cap": st.sampled_from([2, 5, 500]),
    }
)


def test_shaped_pages_equal_the_generic_query(migrated_engine: AsyncEngine, database_url: str, tmp_path: Path) -> None:
    # Hypothesis drives a synchronous test: the engine lives on this test's own event loop.
    loop = asyncio.new_event_loop()
    engine = create_engine(database_url)
    try:
        loop.run_until_complete(_clear(engine))
        patients = loop.run_until_complete(seed(engine))

        @settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(case=CASES)
        def check(case: dict) -> None:
            loop.run_until_complete(_compare(engine, tmp_path, patients, case))

        check()
        assert page_statements.cache_info().currsize > 10  # many shapes were exercised
    finally:
        loop.run_until_complete(_clear(engine))
        loop.run_until_complete(engine.dispose())
        loop.close()


async def _clear(engine: AsyncEngine) -> None:
    from app.db.models import Base

    async with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            await conn.execute(table.delete())


async def _compare(engine: AsyncEngine, tmp_path: Path, patients: list[uuid.UUID], case: dict) -> None:
    roles = (
        set(case["roles"]) | ({"SUPERVISOR"} if case["supervisor"] else set()) | ({"PART2"} if case["part2"] else set())
    )
    principal = Principal("ann", frozenset(roles), frozenset(case["teams"]))
    app_settings = Settings(
        var_dir=tmp_path,
        jwt_secret="x" * 40,
        supervisor_roles=["SUPERVISOR"],
        part2_roles=["PART2"],
        worklist_count_cap=case["cap"],
    )
    hours = lambda h: None if h is None else NOW + timedelta(hours=h)  # noqa: E731
    filters = TaskFilters(
        statuses=case["statuses"],
        roles=case["role_filter"],
        types=case["types"],
        teams=case["team_filter"],
        unassigned_team=case["pool_filter"],
        owners=case["owners"],
        unowned=case["unowned"],
        patients=[patients[i] for i in case["patients"]],
        due_before=hours(case["due_before"]),
        due_after=hours(case["due_after"]),
        overdue=case["overdue"],
        due_soon=case["due_soon"],
    )
    sort, order, limit = case["sort"], case["order"], case["limit"]
    reference_conditions = [*filter_conditions(filters, NOW, DUE_SOON), *task_conditions(principal, app_settings)]
    cursor = None
    for _ in range(3):  # the first pages, following the cursor
        query = PageQuery.of(principal, app_settings, filters, sort, order, cursor, limit)
        async with engine.connect() as conn:
            shaped = await run_page(conn, query, NOW, DUE_SOON)
        async with session_factory(engine)() as session:
            reference = await task_page(
                session, reference_conditions, sort=sort, order=order, limit=limit, cursor=cursor, count_cap=case["cap"]
            )
        assert [row.id for row, _ in shaped.rows] == [row.id for row, _ in reference.rows], case
        # The columns a worklist reads, values and types: the asyncpg path applies SQLAlchemy's processing.
        for (got, got_patient), (want, want_patient) in zip(shaped.rows, reference.rows, strict=True):
            want_values = want._asdict()
            shown = [k for k in got._fields if k != "counted"]  # the page's capped total rides on each row
            assert {k: (getattr(got, k), type(getattr(got, k))) for k in shown} == {
                k: (want_values[k], type(want_values[k])) for k in shown
            }
            assert got_patient == want_patient
        assert (shaped.total, shaped.total_exact) == (reference.total, reference.total_exact), case
        assert shaped.next_cursor == reference.next_cursor, case
        if shaped.next_cursor is None:
            break
        cursor = shaped.next_cursor
