"""Database outage test (issue 9): PostgreSQL unreachable mid-stream for over 30 s.

The shared server is not stopped: the consumer reaches it through a TCP proxy the test cuts (every
connection reset, new ones refused) and then black-holes (connections accepted, never answered).
Meanwhile the consumer retries the same event with backoff, commits no offset past an unapplied event
and reports not-ready; when the database returns it resumes, and nothing is lost or doubled."""

from __future__ import annotations

import asyncio
import logging
import os
import time

import httpx
import pytest
from sqlalchemy import func, make_url, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api.app import create_app
from app.db.models import InboundEvent, Task, TaskOutbox
from app.runtime import Runtime
from app.settings import Settings
from tests.conftest import eventually, wait_until_assigned
from tests.reliability.harness import (
    committed_offsets,
    count,
    discharges,
    publish,
    wait_caught_up,
)
from tests.reliability.tcp_proxy import TcpProxy

OUTAGE_CUT_S = float(os.environ.get("CARECOORD_OUTAGE_CUT_S", "20"))
OUTAGE_BLACKHOLE_S = float(os.environ.get("CARECOORD_OUTAGE_BLACKHOLE_S", "12"))


async def _applied_offsets(db: AsyncEngine) -> dict[int, set[int]]:
    async with db.connect() as conn:
        rows = (await conn.execute(select(InboundEvent.partition, InboundEvent.offset))).all()
    done: dict[int, set[int]] = {}
    for partition, offset in rows:
        done.setdefault(partition, set()).add(offset)
    return done


@pytest.mark.postgresql(reason="a network outage needs a database server to cut; SQLite is a file in the process")
async def test_database_outage_backs_off_reports_not_ready_and_loses_nothing(
    settings: Settings, database_url: str, db: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    url = make_url(database_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    settings = settings.model_copy(
        update={"database_url": proxied, "consumer_db_retry_max_s": 2.0, "readiness_check_timeout_s": 1.0}
    )
    before, during = discharges(1500, "OB"), discharges(1500, "OD")
    bootstrap = settings.kafka_bootstrap_servers or ""
    topics = {"adt": settings.topics.adt}
    caplog.set_level(logging.WARNING, logger="app.consumers.runner")
    try:
        async with Runtime(settings) as rt:
            await wait_until_assigned(rt)
            app = create_app(runtime=rt)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
                assert (await client.get("/readyz")).status_code == 200
                stream = asyncio.create_task(publish(bootstrap, topics, before, pause_s=0.3))

                async def some_applied() -> bool:
                    return await count(db, select(func.count()).select_from(InboundEvent)) >= 300

                assert await eventually(some_applied, timeout_s=60, interval_s=0.05)
                await stream
                proxy.cut()
                outage_started = time.monotonic()
                await publish(bootstrap, topics, during)  # the broker still takes the feed
                readiness: list[int] = []
                while (elapsed := time.monotonic() - outage_started) < OUTAGE_CUT_S + OUTAGE_BLACKHOLE_S:
                    if elapsed >= OUTAGE_CUT_S and proxy.mode == "cut":
                        proxy.blackhole()
                    readiness.append((await client.get("/readyz")).status_code)
                    # No offset committed past an event that is not in the database.
                    applied = await _applied_offsets(db)
                    committed = await committed_offsets(bootstrap, settings.consumer_group, [settings.topics.adt])
                    for tp, next_offset in committed.items():
                        missing = set(range(next_offset)) - applied.get(tp.partition, set())
                        assert not missing, f"partition {tp.partition}: committed past unapplied {sorted(missing)[:5]}"
                    await asyncio.sleep(1)
                outage_s = time.monotonic() - outage_started
                applied_during = await count(db, select(func.count()).select_from(InboundEvent))
                retries = [r for r in caplog.records if r.getMessage() == "transient failure; retrying the same event"]
                proxy.restore()

                await wait_caught_up(bootstrap, {settings.consumer_group: settings.topics.adt}, timeout_s=120)
                ready_again = await eventually(lambda: _ready(client), timeout_s=30, interval_s=0.5)
                unpublished = select(func.count()).where(TaskOutbox.published_at.is_(None))
                assert await eventually(lambda: _zero(db, unpublished), timeout_s=30)
    finally:
        await proxy.close()

    assert outage_s >= 30
    assert proxy.refused > 0, "the consumer tried to reconnect during the outage"
    assert all(code == 503 for code in readiness[3:]), readiness  # not ready once the outage is noticed
    assert ready_again
    # Backoff, not a hot loop: retries double up to 2 s, so a 32 s outage costs tens of attempts.
    assert 3 <= len(retries) <= 60, len(retries)
    assert applied_during < len(before) + len(during)
    assert await count(db, select(func.count()).select_from(InboundEvent)) == len(before) + len(during)
    assert await count(db, select(func.count()).select_from(Task)) == len(before) + len(during)


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


async def _zero(db: AsyncEngine, query) -> bool:  # type: ignore[no-untyped-def]
    return await count(db, query) == 0
