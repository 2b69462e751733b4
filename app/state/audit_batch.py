"""Audit records of concurrent requests written together: one statement and one commit per batch.

Why: the worklist page is the API's hottest read and each page is audited; one INSERT and one commit
per page cost the API and PostgreSQL about a tenth of the page's CPU (docs/benchmarks.md). Here a
request hands its record over and waits until the batch holding it has committed, so a page is still
never returned unless its audit record is stored; records that arrive while a batch is being written
form the next one (group commit), so an idle server writes each record at once and a busy one writes
many per round trip. When a batch fails, its records are written again one by one, so only a
record the database refuses fails its request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.prepared import Prepared


class AuditBatcher:
    def __init__(self, engine: AsyncEngine, statement: Prepared, max_batch: int) -> None:
        self.engine, self.statement, self.max_batch = engine, statement, max_batch
        self._pending: list[tuple[Mapping[str, Any], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def write(self, values: Mapping[str, Any]) -> None:
        """Store one record; returns once it is committed, raises what its write raised."""
        done = asyncio.get_running_loop().create_future()
        done.add_done_callback(_retrieved)  # a request cancelled while waiting leaves no unread error
        self._pending.append((values, done))
        if self._writer is None or self._writer.done():
            # Its own task: a request cancelled while waiting does not cancel the batch it is in.
            self._writer = asyncio.create_task(self._write_pending())
        await asyncio.shield(done)

    async def _write_pending(self) -> None:
        batch: list[tuple[Mapping[str, Any], asyncio.Future[None]]] = []
        try:
            while self._pending:
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
                try:
                    await self._insert(batch)
                except Exception as exc:
                    if len(batch) == 1:
                        _settle(batch[0][1], exc)
                        continue
                    # One bad record (a value the database refuses) must not fail its neighbours' pages:
                    # the batch is written again record by record, and only what fails fails.
                    for one in batch:
                        try:
                            await self._insert([one])
                        except Exception as each:
                            _settle(one[1], each)
                        else:
                            _settle(one[1], None)
                else:
                    for _, done in batch:
                        _settle(done, None)
        finally:
            # Cancelled (shutdown) mid-batch: nobody may wait for ever on a record that was not written.
            for _, done in [*batch, *self._pending]:
                _settle(done, RuntimeError("the audit writer stopped before this record was stored"))
            self._pending = []

    async def _insert(self, batch: list[tuple[Mapping[str, Any], asyncio.Future[None]]]) -> None:
        async with self.engine.connect() as conn:
            await self.statement.execute_many(conn, [values for values, _ in batch])
            await conn.commit()  # SQLite; on PostgreSQL the batch committed as one statement

    async def close(self) -> None:
        """Wait for the records handed over so far (shutdown)."""
        if self._writer is not None:
            await asyncio.gather(asyncio.shield(self._writer), return_exceptions=True)


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    if not done.done():
        done.set_result(None) if error is None else done.set_exception(error)


def _retrieved(done: asyncio.Future[None]) -> None:
    if not done.cancelled():
        done.exception()
