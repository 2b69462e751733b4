"""Property (issue 9): no illegal task transition is reachable through the HTTP API.

Hypothesis draws sequences of person actions (claim, release, assign, start, complete, cancel) by
different people, with current and stale If-Match; each sequence runs against its own real task. Every
status change the API wrote must be a move of the FHIR Task state machine, and the task ends where the
last accepted answer said."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import Task, TaskHistory
from app.runtime import Runtime
from app.settings import Settings
from app.tasks.lifecycle import check_transition
from tests.conftest import bearer, eventually
from tests.hl7_builder import adt
from tests.integration.test_adt_pipeline import produce
from tests.reliability.fuzz_corpus import collect_examples

SEQUENCES = 20
STEP = st.tuples(
    st.sampled_from(["claim", "release", "assign", "start", "complete", "cancel"]),
    st.sampled_from(["ana", "ben", "sup"]),
    st.booleans(),  # send the version last seen (True) or a stale one
)
BODIES = {"assign": {"owner": "ben"}, "complete": {"outcome": "follow-up booked"}, "cancel": {"reason": "moved"}}


async def test_no_illegal_transition_is_reachable_through_the_api(
    runtime: Runtime,
    settings: Settings,
    client: httpx.AsyncClient,
    token_for: Callable[..., str],
    db: AsyncEngine,
) -> None:
    sequences = collect_examples(st.lists(STEP, min_size=1, max_size=6), SEQUENCES)
    await produce(
        settings, *(adt(control_id=f"SM-{i}", mrn=f"SM{i}", visit_number=f"VSM{i}").encode() for i in range(SEQUENCES))
    )

    async def all_tasks() -> list[str]:
        async with db.connect() as conn:
            ids = [str(i) for i in (await conn.scalars(select(Task.id).order_by(Task.id))).all()]
        return ids if len(ids) >= SEQUENCES else []

    task_ids = await eventually(all_tasks, timeout_s=30)
    tokens = {
        "ana": token_for("PMC", sub="ana"),
        "ben": token_for("PMC", sub="ben"),
        "sup": token_for("PMC", "SUPERVISOR", sub="sup"),
    }
    expected: dict[str, str] = {}
    answers: set[int] = set()
    for task_id, steps in zip(task_ids, sequences, strict=False):
        version, status = 1, "ready"
        for action, who, current in steps:
            headers = {**bearer(tokens[who]), "If-Match": f'W/"{version if current else version + 7}"'}
            resp = await client.post(f"/tasks/{task_id}/{action}", headers=headers, json=BODIES.get(action))
            answers.add(resp.status_code)
            assert resp.status_code in (200, 403, 409, 412), resp.text
            if resp.status_code == 200:
                version, status = resp.json()["version"], resp.json()["status"]
        expected[task_id] = status

    async with db.connect() as conn:
        moves = (await conn.execute(select(TaskHistory.from_status, TaskHistory.to_status, TaskHistory.actor))).all()
        final = dict((str(i), s) for i, s in (await conn.execute(select(Task.id, Task.status))).all())
    for from_status, to_status, actor in moves:
        if actor.startswith("user:") and from_status != to_status:
            check_transition(from_status, to_status)  # raises on an illegal move
    assert {t: final[t] for t in expected} == expected
    assert 200 in answers and answers & {409, 412}, "the sequences exercised both accepted and refused actions"
