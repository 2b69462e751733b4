"""Broker restart test (issue 9): the Tansu process is stopped mid-stream and started again.

The same producer, consumers and outbox relay carry on: ingest refuses (503, nothing acked) while the
broker is away and accepts again after; consumers rejoin and apply what arrives; the relay publishes.
Tansu here keeps topics in memory, so the test recreates them after the restart, as a cluster's own
storage would; with an external Kafka that is the cluster's job, the client code's is to retry."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api.app import create_app
from app.db.models import Task, TaskOutbox
from app.messaging.embedded_broker import EmbeddedBroker
from app.messaging.kafka_clients import KafkaConnection
from app.messaging.topics import ensure_topics, topic_specs
from app.runtime import Runtime
from app.settings import Settings
from tests.conftest import bearer, eventually, wait_until_assigned
from tests.hl7_builder import adt
from tests.reliability.harness import count


async def test_producer_consumers_and_relay_recover_from_a_broker_restart(
    settings: Settings, db: AsyncEngine, tmp_path: Path, token_for: Callable[..., str]
) -> None:
    broker = EmbeddedBroker(log_file=tmp_path / "restarted-broker.log")
    await broker.start()
    settings = settings.model_copy(
        update={"kafka_bootstrap_servers": broker.bootstrap_servers, "kafka_request_timeout_ms": 3000}
    )
    kafka = KafkaConnection.from_settings(settings, broker.bootstrap_servers)
    feed = {**bearer(token_for("INTEGRATION")), "Content-Type": "text/plain"}
    tasks = select(func.count()).select_from(Task)

    async def ingest(client: httpx.AsyncClient, i: int) -> int:
        message = adt(control_id=f"BR-{i}", mrn=f"BR{i}", visit_number=f"VBR{i}")
        return (await client.post("/ingest/hl7v2", content=message, headers=feed)).status_code

    async def tasks_at_least(n: int) -> bool:
        return await count(db, tasks) >= n

    try:
        async with Runtime(settings) as rt:
            await wait_until_assigned(rt)
            app = create_app(runtime=rt)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
                assert [await ingest(client, i) for i in range(30)] == [202] * 30
                assert await eventually(lambda: tasks_at_least(30), timeout_s=30)

                members = {c._consumer._coordinator.member_id for c in rt.consumers}
                await broker.stop()
                assert await ingest(client, 1000) == 503  # not acked, so not accepted: the sender retries
                ready = await client.get("/readyz")
                assert ready.status_code == 503 and ready.json()["checks"]["broker"] is False

                await broker.start()  # same port
                await ensure_topics(kafka, topic_specs(settings), 1)

                async def rejoined() -> bool:
                    return all(
                        c._consumer._coordinator.member_id not in members and c._consumer.assignment()
                        for c in rt.consumers
                    )

                # The restarted broker knows no groups: each consumer rejoins as a new member and starts its
                # partitions again from the group's (now empty) commits. Only a memory-only broker loses its
                # logs; records sent before the rejoin could meet a consumer still at its old offsets.
                assert await eventually(rejoined, timeout_s=90, interval_s=0.2), "consumers rejoined the group"
                codes = []
                for i in range(30, 60):
                    code = await ingest(client, i)
                    while code != 202 and len(codes) < 200:  # the first sends may still see the old metadata
                        codes.append(code)
                        await asyncio.sleep(0.2)
                        code = await ingest(client, i)
                    assert code == 202, codes
                assert await eventually(lambda: tasks_at_least(60), timeout_s=60), "consumers resumed"
                unpublished = select(func.count()).where(TaskOutbox.published_at.is_(None))

                async def relayed() -> bool:
                    return await count(db, unpublished) == 0

                assert await eventually(relayed, timeout_s=60), "the relay published after the restart"
                assert await eventually(lambda: _ready(client), timeout_s=30)
    finally:
        await broker.stop()
    assert await count(db, tasks) == 60


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200
