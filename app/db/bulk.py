"""Bulk row inserts for the ingest hot path: binary COPY on PostgreSQL, executemany elsewhere.

A multi-row INSERT through SQLAlchemy costs ~40 µs a row on PostgreSQL, most of it building and
binding parameters; asyncpg's binary COPY costs a few. Values go through each column's own bind
processing (UTC normalisation, JSON encoding) and Python-side defaults, so a row lands exactly as
an INSERT would store it; tests/integration/test_batch_equivalence.py compares the two paths.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Column, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession


def _bind(column: Column[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    return column.type.dialect_impl(dialect).bind_processor(dialect)


def _python_default(column: Column[Any]) -> Callable[[], Any] | None:
    """The column's client-side default as a thunk; None when the database supplies it (or none)."""
    default = column.default
    if default is None or not (default.is_scalar or default.is_callable):
        return None
    if default.is_scalar:
        value = default.arg  # type: ignore[attr-defined]
        return lambda: value
    fn = default.arg  # type: ignore[attr-defined]
    return lambda: fn(None)  # SQLAlchemy wraps zero-argument callables to take an execution context


async def insert_rows(session: AsyncSession, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert rows that all name the same columns, in the session's transaction."""
    if not rows:
        return
    conn = await session.connection()
    dialect = conn.dialect
    if dialect.name != "postgresql" or dialect.driver != "asyncpg":
        await conn.execute(table.insert(), list(rows))
        return
    # Column by column: a list comprehension per column and one zip beat a closure per value.
    named = rows[0].keys()
    names: list[str] = []
    columns: list[list[Any]] = []
    count = len(rows)
    for column in table.columns:
        if column.name in named:
            values = [row[column.name] for row in rows]
        else:
            default = _python_default(column)
            if default is None:
                continue  # the database fills it (a sequence, a server default) or it stays NULL
            values = [default() for _ in range(count)]
        bind = _bind(column, dialect)
        names.append(column.name)
        columns.append([bind(v) for v in values] if bind else values)
    records = list(zip(*columns, strict=True))
    raw = (await conn.get_raw_connection()).driver_connection
    await raw.copy_records_to_table(table.name, records=records, columns=names, schema_name=table.schema)
