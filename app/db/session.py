"""Engine and session factory for the configured database."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic_core import from_json
from sqlalchemy import event, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

POOL_RECYCLE_S = 1800
# JSON columns are read with pydantic-core's parser: the standard library's cost a worklist page ~0.5 ms
# of CPU (three JSON columns x 50 rows; docs/benchmarks.md). Same values (what it refuses falls back to
# json.loads); writes keep json.dumps.


def read_json(text: str) -> object:
    try:
        return from_json(text)
    except ValueError:  # what json.loads reads and pydantic-core refuses (a lone surrogate escape)
        return json.loads(text)


def create_engine(url: str, echo: bool = False, pool_size: int = 20, max_overflow: int = 10) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, echo=echo, connect_args={"timeout": 30}, json_deserializer=read_json)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            # WAL lets the API read while a consumer writes; FKs are off by default in SQLite.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    # A connection opened past the pool is closed when returned, and a new one costs a handshake, type
    # introspection and asyncpg's statements prepared again: the pool is sized to the requests in flight.
    # Replaced after 30 minutes: NATs and load balancers cut idle sockets silently (often after an hour).
    engine = create_async_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_recycle=POOL_RECYCLE_S,
        json_deserializer=read_json,
    )

    @event.listens_for(engine.sync_engine.pool, "checkout")
    def _drop_closed(dbapi_conn, _record, _proxy) -> None:  # type: ignore[no-untyped-def]
        # A connection the server closed (a restart, a failover) is known to asyncpg without a round trip;
        # the pool then takes another. SQLAlchemy's pre-ping cost three round trips per checkout (BEGIN, a
        # ping, ROLLBACK): a third of a worklist page's Python time (docs/benchmarks.md). A connection that
        # fails mid-statement is invalidated where it failed (app/db/prepared.py; SQLAlchemy's own path).
        if parsed.get_driver_name() == "asyncpg" and dbapi_conn.driver_connection.is_closed():
            raise DisconnectionError("connection closed by the server")

    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker:
    from app.db import task_metrics

    task_metrics.install()  # tasks created/completed/escalated are counted as their transactions commit
    return async_sessionmaker(engine, expire_on_commit=False)
