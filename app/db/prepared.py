"""Statements built once per query shape and run with new values each time.

Why: on the worklist, building and compiling the SQLAlchemy statement cost more Python time than the
database spent running it (bench/api.py, docs/benchmarks.md). A statement built once per shape (which
filters, how many scope ranges, which sort), with named bind parameters for every value, is compiled
once per dialect; a request then only binds values.

On PostgreSQL (asyncpg) the compiled text runs on the asyncpg connection itself (asyncpg prepares it
once per connection and keeps it in its statement cache), each statement in autocommit; SQLAlchemy's
type processing is applied to values and results, so both paths return the same Python values. Other
dialects run through SQLAlchemy. `CARECOORD_DATABASE_ECHO` does not log the asyncpg path.
"""

from __future__ import annotations

import asyncio
import sys
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import BindParameter, Executable
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.compiler import SQLCompiler

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class _Param:
    name: str
    processor: Processor
    required: bool  # a named value of each run; else a constant of the statement
    constant: Any


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    params: tuple[_Param, ...]  # positional order ($1, $2, ...)
    row: type  # a namedtuple of the result columns
    processed: tuple[tuple[int, Callable[[Any], Any]], ...]  # (column index, result processor), where any


class Prepared:
    """A statement whose every varying value is a named `bindparam`; `rows()` binds them."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._compiled: dict[str, _Compiled] = {}

    def _compile(self, dialect: Dialect) -> _Compiled:
        found = self._compiled.get(dialect.name)
        if found is None:
            # Literal-execute parameters (status lists inlined for the partial indexes) are rendered now:
            # their values are part of the shape. Rendering them asks a value of every parameter; the
            # others stay placeholders, so any value does.
            compiled = self.statement.compile(dialect=dialect)
            binds = compiled.binds  # named parameters are `required`; literals of the shape carry their value
            if any(bind.literal_execute for bind in binds.values()):
                placeholders = {name: None for name, bind in binds.items() if not bind.literal_execute}
                statement = self.statement.params(placeholders)  # type: ignore[attr-defined]
                compiled = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
            assert isinstance(compiled, SQLCompiler)
            params = tuple(_param(name, binds[name], dialect) for name in compiled.positiontup or [])
            columns = compiled._result_columns  # (key, name, objects, type) per result column
            row = namedtuple("Row", [c[0] for c in columns], rename=True)  # type: ignore[misc]
            results = [c[3].dialect_impl(dialect).result_processor(dialect, None) for c in columns]
            processed = tuple((i, p) for i, p in enumerate(results) if p is not None)
            found = self._compiled[dialect.name] = _Compiled(compiled.string, params, row, processed)
        return found

    async def rows(self, conn: AsyncConnection, values: Mapping[str, Any]) -> Sequence[Any]:
        """Rows with attribute access by column label, values typed as SQLAlchemy would type them."""
        if not _on_asyncpg(conn):
            return (await conn.execute(self.statement, dict(values))).all()  # type: ignore[arg-type]
        compiled = self._compile(conn.dialect)
        records = await _run(conn, "fetch", compiled.sql, _bind(compiled, values))
        make, processed = compiled.row._make, compiled.processed
        if not processed:
            return [make(record) for record in records]
        rows = []
        for record in records:  # only the few typed columns (times) are touched: a page has ~1,200 values
            values = list(record)
            for i, process in processed:
                if values[i] is not None:
                    values[i] = process(values[i])
            rows.append(make(values))
        return rows

    async def execute(self, conn: AsyncConnection, values: Mapping[str, Any]) -> None:
        """Run a statement that returns no rows (an INSERT). On asyncpg it commits on its own (as every
        statement here: see `_run`); elsewhere it joins the connection's transaction, for the caller to commit."""
        if not _on_asyncpg(conn):
            await conn.execute(self.statement, dict(values))  # type: ignore[arg-type]
            return
        compiled = self._compile(conn.dialect)
        await _run(conn, "execute", compiled.sql, _bind(compiled, values))

    async def execute_many(self, conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
        """`execute` for many value sets in one round trip; on asyncpg atomic and committed on its own."""
        if not _on_asyncpg(conn):
            await conn.execute(self.statement, [dict(values) for values in rows])  # type: ignore[arg-type]
            return
        compiled = self._compile(conn.dialect)
        await _run(conn, "executemany", compiled.sql, [_bind(compiled, values) for values in rows])


def _on_asyncpg(conn: AsyncConnection) -> bool:
    return conn.dialect.name == "postgresql" and conn.dialect.driver == "asyncpg"


async def _run(conn: AsyncConnection, method: str, sql: str, args: list[Any]) -> Any:
    """One statement on the asyncpg connection under `conn`, outside SQLAlchemy: it runs in autocommit,
    so a connection in a SQLAlchemy transaction is refused (the statement would not be part of it).
    `executemany` takes one argument: the list of argument lists."""
    if conn.in_transaction():
        raise RuntimeError("Prepared runs outside SQLAlchemy's transactions: use a connection that has none")
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    try:
        if method == "executemany":
            return await driver.executemany(sql, args)
        return await getattr(driver, method)(sql, *args)
    except asyncpg.exceptions.DataError:
        raise  # a value that does not encode: the connection is fine
    except (OSError, asyncpg.exceptions.ConnectionDoesNotExistError, asyncpg.exceptions.InterfaceError):
        # SQLAlchemy invalidates a broken connection on its own path; on this one, here.
        await conn.invalidate()
        raise
    except BaseException:
        # Cancelled mid-statement (a client gone, a timeout): the protocol is mid-exchange, so the
        # connection must not go back to the pool (SQLAlchemy's own path does the same).
        if not isinstance(sys.exc_info()[1], Exception):
            driver.terminate()  # type: ignore[union-attr]
            await asyncio.shield(conn.invalidate())
        raise


def _param(name: str, bind: BindParameter[Any], dialect: Dialect) -> _Param:
    processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
    return _Param(name, processor, bind.required, bind.effective_value)


def _bind(compiled: _Compiled, values: Mapping[str, Any]) -> list[Any]:
    bound = []
    for param in compiled.params:
        value = values[param.name] if param.required else param.constant
        bound.append(value if param.processor is None else param.processor(value))
    return bound
