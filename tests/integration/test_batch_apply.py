"""One transaction per poll is an optimisation only: a failure anywhere in the batch rolls it back and
the per-record path isolates the bad record, so the good ones around it are still applied once."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import InboundEvent, RejectedEvent, Task
from app.encounters.state import EncounterFacts
from app.runtime import Runtime
from app.settings import Settings
from app.state.inbound import Position
from tests.hl7_builder import adt
from tests.integration.test_adt_pipeline import produce
from tests.integration.test_adt_semantics import rows, settle


@pytest.fixture
def poisoned_visit(monkeypatch: pytest.MonkeyPatch) -> str:
    """Applying visit V-POISON raises, as a bug or a refused row would, on both apply paths."""
    real = EncounterFacts.from_notice

    def from_notice(notice):  # type: ignore[no-untyped-def]
        if notice.visit_number == "V-POISON":
            raise RuntimeError("boom")
        return real(notice)

    monkeypatch.setattr(EncounterFacts, "from_notice", staticmethod(from_notice))
    return "V-POISON"


async def test_failure_inside_a_batch_is_isolated(
    runtime: Runtime, settings: Settings, db: AsyncEngine, poisoned_visit: str
) -> None:
    await produce(
        settings,
        adt("A03", control_id="GOOD-1", mrn="M1", visit_number="V1").encode(),
        adt("A03", control_id="BAD", mrn="M2", visit_number=poisoned_visit).encode(),
        adt("A03", control_id="GOOD-2", mrn="M3", visit_number="V3").encode(),
        key=b"one-partition",
    )
    await settle(db, 2, 1)
    [bad] = await rows(db, RejectedEvent)
    assert bad.reason.startswith("processing failed: RuntimeError")
    assert len(await rows(db, Task)) == 2


async def test_batch_applies_in_order_and_dedupes_within_the_batch(runtime: Runtime, db: AsyncEngine) -> None:
    assert runtime.adt_handler is not None
    a01 = adt("A01", control_id="A01", event_time="20261115083000-0500").encode()
    a03 = adt("A03", control_id="A03", event_time="20261120142500-0500").encode()
    results = await runtime.adt_handler.handle_batch(
        [
            (a01, Position("t", 0, 0)),
            (a03, Position("t", 0, 1)),
            (a03, Position("t", 0, 2)),
            (b"junk", Position("t", 0, 3)),
        ]
    )
    assert results is not None
    assert [r.outcome.value for r in results] == ["applied", "applied", "duplicate", "rejected"]
    assert [r.tasks_created for r in results] == [0, 1, 0, 0]
    async with db.connect() as conn:
        offsets = sorted((await conn.execute(select(InboundEvent.offset))).scalars().all())
    assert offsets == [0, 1]
    assert [r.offset for r in await rows(db, RejectedEvent)] == [3]


async def test_batch_reports_failure_without_committing_anything(
    runtime: Runtime, db: AsyncEngine, poisoned_visit: str
) -> None:
    assert runtime.adt_handler is not None
    results = await runtime.adt_handler.handle_batch(
        [
            (adt("A03", control_id="G", visit_number="V1").encode(), Position("t", 0, 0)),
            (adt("A03", control_id="B", mrn="M2", visit_number=poisoned_visit).encode(), Position("t", 0, 1)),
        ]
    )
    assert results is None
    assert await rows(db, InboundEvent) == [] and await rows(db, Task) == []
