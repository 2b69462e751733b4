"""One transaction per poll is an optimisation only: a failure anywhere in the batch rolls it back and
the per-record path isolates the bad record, so the good ones around it are still applied once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm.exc import StaleDataError

from app.consumers.batch_apply import BatchApplier
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


async def test_batch_close_is_guarded_by_the_version_it_read(
    runtime: Runtime, db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task changed between the batch's read and its write (here: by the same transaction, as a
    writer without the lock would) makes the batch stale: nothing is written, the consumer retries."""
    handler = runtime.adt_handler
    assert handler is not None
    await handler.handle(adt("A03", control_id="A03", visit_number="V1").encode(), Position("t", 0, 0))
    real_load = BatchApplier._load

    async def load_then_bump(self, session, notices, b):  # type: ignore[no-untyped-def]
        applied = await real_load(self, session, notices, b)
        await session.execute(update(Task).values(version=Task.version + 1))
        return applied

    monkeypatch.setattr(BatchApplier, "_load", load_then_bump)
    office = adt(
        "A04",
        control_id="A04",
        visit_number="V2",
        patient_class="O",
        event_time="20261122090000-0500",
        admit_time="20261122090000-0500",
    ).encode()
    applier = BatchApplier(
        source="hl7v2",
        engine=runtime.rule_engine,
        sensitivity=runtime.sensitivity_policy(),
        max_skew=timedelta(seconds=runtime.settings.event_time_max_skew_s),
    )
    with pytest.raises(StaleDataError):
        async with runtime.sessions() as session, session.begin():
            await applier.apply(session, [(handler.decode(office), Position("t", 0, 1))])
    assert {t.status for t in await rows(db, Task)} == {"ready"}  # nothing committed
    # Through the handler the stale batch is not committed either; the per-record path then applies it.
    assert await handler.handle_batch([(office, Position("t", 0, 1))]) is None
