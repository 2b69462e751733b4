"""The engine's pool replaces connections the server closed (app/db/session.py), without a ping per
checkout: after PostgreSQL terminates every connection of the pool, the next statements still run."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import literal, select, text

from app.db.prepared import Prepared
from app.db.session import create_engine

pytestmark = pytest.mark.asyncio


@pytest.mark.postgresql(reason="SQLite has no server to close a connection")
async def test_a_connection_the_server_closed_is_replaced(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=2, max_overflow=0)
    ping = Prepared(select(literal(1)))
    try:
        async with engine.connect() as conn:
            pids = {(await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()}
        admin = create_engine(database_url)
        async with admin.connect() as conn:
            terminate = text("SELECT pg_terminate_backend(pid) FROM unnest(CAST(:p AS int[])) AS pid")
            await conn.execute(terminate, {"p": list(pids)})
            await conn.commit()
        await admin.dispose()
        await asyncio.sleep(0.2)  # the event loop reads the server's goodbye, as it would between requests
        for _ in range(3):  # through SQLAlchemy and through the prepared path
            async with engine.connect() as conn:
                assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
            async with engine.connect() as conn:
                assert (await ping.rows(conn, {}))[0][0] == 1
    finally:
        await engine.dispose()
