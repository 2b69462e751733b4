"""Grouped audit commits (app/state/audit_batch.py): every record of concurrent requests is stored, in
fewer statements than records, and a record the database refuses fails only its own request."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.db.models import AuditEvent
from app.db.prepared import Prepared
from app.state.audit import AUDIT_INSERT, AuditAction, audit_values
from app.state.audit_batch import AuditBatcher


class CountingInsert(Prepared):
    """AUDIT_INSERT, counting the statements run and the records each carried."""

    def __init__(self) -> None:
        super().__init__(AUDIT_INSERT.statement)
        self.batches: list[int] = []

    async def execute_many(self, conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
        self.batches.append(len(rows))
        await asyncio.sleep(0.01)  # a slow round trip: requests keep arriving meanwhile
        await super().execute_many(conn, rows)


def record(n: int) -> dict[str, Any]:
    return audit_values(f"user-{n}", ["PMC"], action=AuditAction.READ, resource_type="Task", request=f"GET /{n}")


async def stored(db: AsyncEngine) -> list[str]:
    async with db.connect() as conn:
        return sorted((await conn.execute(select(AuditEvent.request))).scalars())


async def test_concurrent_records_are_all_stored_in_fewer_statements(db: AsyncEngine) -> None:
    insert = CountingInsert()
    batcher = AuditBatcher(db, insert, max_batch=8)
    await asyncio.gather(*(batcher.write(record(n)) for n in range(30)))
    assert await stored(db) == sorted(f"GET /{n}" for n in range(30))
    assert sum(insert.batches) == 30 and max(insert.batches) <= 8
    assert len(insert.batches) < 30  # grouped: the first alone, the rest in batches of up to 8
    await batcher.write(record(99))  # an idle batcher writes the next record at once
    assert insert.batches[-1] == 1
    async with db.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(AuditEvent))).scalar_one() == 31


async def test_a_record_the_database_refuses_fails_only_its_own_request(db: AsyncEngine) -> None:
    insert = CountingInsert()
    batcher = AuditBatcher(db, insert, max_batch=50)
    first = asyncio.ensure_future(batcher.write(record(0)))  # its own batch, being written below
    await asyncio.sleep(0)
    # The next batch holds one record without an actor (NOT NULL): the batch is refused, then its
    # records are written one by one.
    results = await asyncio.gather(
        batcher.write(record(1)), batcher.write({**record(2), "actor": None}), batcher.write(record(3)),
        return_exceptions=True,
    )  # fmt: skip
    await first
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], Exception), results
    assert insert.batches == [1, 3, 1, 1, 1]
    assert await stored(db) == ["GET /0", "GET /1", "GET /3"]
    await batcher.write(record(4))  # the batcher goes on after a failure
    assert await stored(db) == ["GET /0", "GET /1", "GET /3", "GET /4"]


async def test_a_long_actor_is_cut_to_the_column(db: AsyncEngine) -> None:
    await AuditBatcher(db, AUDIT_INSERT, max_batch=10).write(
        audit_values("x" * 1000, ["PMC"], action=AuditAction.READ, resource_type="Task", request="GET /long")
    )
    async with db.connect() as conn:
        assert (await conn.execute(select(AuditEvent.actor))).scalar_one() == "x" * 255
