"""Outbound roster files streamed from the database: shared by `carecoord roster export|report` and
the HTTP API, so both send byte-identical files. Each generator owns its session for its lifetime."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker

from app.roster.exports import (
    CHANGE_COLUMNS,
    ENS_COLUMNS,
    STATUS_COLUMNS,
    atr_bundle,
    change_row,
    csv_lines,
    ens_row,
    status_row,
)
from app.roster.reconcile import categories
from app.state import rosters as store
from app.state.membership import active_members

EXPORT_KINDS = ("ens", "status", "atr")


async def export_lines(sessions: async_sessionmaker, kind: str, sender: str | None, as_of: date) -> AsyncIterator[str]:
    async with sessions() as session:
        members = active_members(session, sender)
        if kind == "atr":
            collected = [m async for m, _ in members]
            bundle = atr_bundle(collected, sender=sender or "all", group_id=f"roster-{sender or 'all'}", as_of=as_of)
            yield json.dumps(bundle, indent=1)
            return
        if kind == "ens":
            rows = (ens_row(m) async for m, _ in members)
            header = ENS_COLUMNS
        else:
            rows = (status_row(m, open_tasks) async for m, open_tasks in members)
            header = STATUS_COLUMNS
        async for line in _csv(header, rows):
            yield line


async def _csv(header: tuple[str, ...], rows: AsyncIterator[list[Any]], batch: int = 1000) -> AsyncIterator[str]:
    """CSV lines in batches (one database fetch feeds many lines); the header even with no rows."""
    pending: list[list[Any]] = []
    columns: tuple[str, ...] = header
    async for row in rows:
        pending.append(row)
        if len(pending) >= batch:
            for line in csv_lines(columns, pending):
                yield line
            columns, pending = (), []
    for line in csv_lines(columns, pending):
        yield line


async def change_report_lines(sessions: async_sessionmaker, import_id: uuid.UUID, fmt: str) -> AsyncIterator[str]:
    async with sessions() as session:
        job = await store.get_import(session, import_id)
        if job is None:
            return
        result = await store.import_changes(session, import_id)
        rows = (change_row(change, member, categories(_fields(change))) async for change, member in result)
        if fmt == "csv":
            async for line in _csv(CHANGE_COLUMNS, rows):
                yield line
            return
        yield '{"import": ' + json.dumps(import_summary(job)) + ', "changes": ['
        separator = ""
        async for values in rows:
            item = dict(zip(CHANGE_COLUMNS, values, strict=True))
            item["categories"], item["fields"] = item["categories"].split(), item["fields"].split()
            yield separator + json.dumps(item, default=str)
            separator = ", "
        yield "]}\n"


def _fields(change: Any) -> list[str]:
    return [f for f in change.fields.split(",") if f]


def import_summary(job: Any) -> dict[str, Any]:
    return {
        "id": str(job.id),
        "sender": job.sender,
        "format": job.format,
        "mapping": job.mapping,
        "filename": job.filename,
        "source": job.source,
        "status": job.status,
        "as_of": job.as_of.isoformat(),
        "received_at": job.received_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "total_rows": job.total_rows,
        "error_rows": job.error_rows,
        "added": job.added,
        "terminated": job.terminated,
        "changed": job.changed,
        "unchanged": job.unchanged,
        "tasks_created": job.tasks_created,
        "tasks_cancelled": job.tasks_cancelled,
        "reason": job.reason,
    }
