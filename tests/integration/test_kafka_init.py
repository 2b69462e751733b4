"""`carecoord kafka init` against the real broker: creates every topic with the configured partitions and
retention, is idempotent, and refuses to paper over a partition count that differs."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from app.messaging.embedded_broker import EmbeddedBroker
from app.messaging.kafka_clients import KafkaConnection
from app.settings import Settings, Topics
from tests.conftest import TEST_JWT_SECRET
from tests.integration.test_cli import CARECOORD, clean_env


def init_env(broker: EmbeddedBroker, suffix: str) -> dict[str, str]:
    """A production configuration: no start-up topic creation, so `kafka init` is the only creator."""
    return clean_env(
        CARECOORD_ENVIRONMENT="production",
        CARECOORD_DATABASE_URL="postgresql+asyncpg://unused@127.0.0.1:1/unused",
        CARECOORD_JWT_SECRET=TEST_JWT_SECRET,
        CARECOORD_KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers,
        CARECOORD_KAFKA_PARTITIONS="4",
        CARECOORD_KAFKA_TASK_EVENTS_PARTITIONS="2",
        CARECOORD_KAFKA_RETENTION_MS="86400000",
        CARECOORD_KAFKA_DEAD_LETTER_RETENTION_MS="-1",
        **{f"CARECOORD_TOPICS__{field.upper()}": f"{field}-{suffix}" for field in Topics.model_fields},
    )


def kafka_init(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CARECOORD, "kafka", "init"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )


async def describe(broker: EmbeddedBroker, names: list[str]) -> dict[str, tuple[int, str | None]]:
    """name -> (partitions, retention.ms) as the broker reports them."""
    admin = KafkaConnection(broker.bootstrap_servers).admin()
    await admin.start()
    try:
        partitions = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)}
        configs = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
        retention = {
            resource[3]: next((entry[1] for entry in resource[4] if entry[0] == "retention.ms"), None)
            for response in configs
            for resource in response.resources
        }
    finally:
        await admin.close()
    return {n: (partitions[n], retention[n]) for n in names}


async def test_kafka_init_creates_all_topics_once(broker: EmbeddedBroker, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    env = init_env(broker, suffix)
    first = kafka_init(env, tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("created ") == 7, first.stdout

    topics = Topics(**{field: f"{field}-{suffix}" for field in Topics.model_fields})
    found = await describe(broker, list(topics.model_dump().values()))
    assert found[topics.adt] == (4, "86400000")
    assert found[topics.ens] == (4, "86400000")
    assert found[topics.fhir] == (4, "86400000")
    assert found[topics.adt_dead_letter] == (1, "-1")
    assert found[topics.fhir_dead_letter] == (1, "-1")
    assert found[topics.task_events] == (2, str(Settings.model_fields["kafka_task_events_retention_ms"].default))

    again = kafka_init(env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("exists ") == 7 and "created" not in again.stdout


async def test_kafka_init_reports_a_partition_mismatch(broker: EmbeddedBroker, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    admin = KafkaConnection(broker.bootstrap_servers).admin()
    await admin.start()
    try:
        await admin.create_topics([NewTopic(f"adt-{suffix}", 2, 1)])
    finally:
        await admin.close()

    done = kafka_init(init_env(broker, suffix), tmp_path)
    assert done.returncode == 3
    assert f"MISMATCH adt-{suffix}: configured 4 partitions, cluster has 2" in done.stderr
    assert (await describe(broker, [f"adt-{suffix}"]))[f"adt-{suffix}"][0] == 2  # left alone
    assert (await describe(broker, [f"ens-{suffix}"]))[f"ens-{suffix}"][0] == 4  # the rest still created
