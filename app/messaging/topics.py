"""The topics carecoord needs, with their partitions and retention, and creating them idempotently.

Development creates them on start; production turns broker auto-creation and start-up creation off and
runs `carecoord kafka init` once per cluster (and again after adding a topic: it only creates what is
missing). Partition counts of existing topics are reported, never changed: adding partitions moves
patients' keys to other partitions and would break per-patient order while old records drain.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from app.messaging.kafka_clients import KafkaConnection
from app.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    retention_ms: int
    purpose: str
    max_message_bytes: int  # max.message.bytes: a message at exactly the ingest limit must fit

    def configs(self, min_insync_replicas: int) -> dict[str, str]:
        return {
            "retention.ms": str(self.retention_ms),
            "cleanup.policy": "delete",
            "min.insync.replicas": str(min_insync_replicas),
            "max.message.bytes": str(self.max_message_bytes),
        }


@dataclass(frozen=True, slots=True)
class TopicReport:
    created: list[str]
    existing: list[str]
    partition_mismatches: dict[str, tuple[int, int]]  # name -> (configured, actual)


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic the service reads or writes, from the settings (one source for init, start-up and docs)."""
    t = settings.topics
    inputs = settings.kafka_partitions, settings.kafka_retention_ms
    dead = settings.kafka_dead_letter_partitions, settings.kafka_dead_letter_retention_ms
    size = settings.broker_message_max_bytes
    return [
        TopicSpec(t.adt, *inputs, "HL7 v2 ADT input", size),
        TopicSpec(t.ens, *inputs, "Da Vinci notification input", size),
        TopicSpec(t.fhir, *inputs, "FHIR clinical input", size),
        TopicSpec(t.adt_dead_letter, *dead, "ADT dead letters", size),
        TopicSpec(t.ens_dead_letter, *dead, "notification dead letters", size),
        TopicSpec(t.fhir_dead_letter, *dead, "FHIR dead letters", size),
        TopicSpec(
            t.task_events,
            settings.kafka_task_events_partitions,
            settings.kafka_task_events_retention_ms,
            "task lifecycle events",
            size,
        ),
    ]


def min_insync_replicas(settings: Settings) -> int:
    if settings.kafka_min_insync_replicas is not None:
        return settings.kafka_min_insync_replicas
    return max(1, settings.kafka_replication_factor - 1)


async def ensure_topics(
    kafka: KafkaConnection, specs: list[TopicSpec], replication: int, min_isr: int = 1
) -> TopicReport:
    """Create the missing topics; leave existing ones alone. Safe to run again and concurrently."""
    admin = kafka.admin()
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if missing:
            # Another process may create them concurrently: that is what we wanted anyway.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(s.name, s.partitions, replication, topic_configs=s.configs(min_isr)) for s in missing]
                )
            log.info("topics created", extra={"topics": [s.name for s in missing]})
        present = [s for s in specs if s.name in existing]
        mismatches: dict[str, tuple[int, int]] = {}
        if present:
            for described in await admin.describe_topics([s.name for s in present]):
                spec = next(s for s in present if s.name == described["topic"])
                actual = len(described.get("partitions") or [])
                if actual != spec.partitions:
                    mismatches[spec.name] = (spec.partitions, actual)
        if mismatches:
            log.warning("topic partition counts differ from the configuration", extra={"topics": mismatches})
        return TopicReport([s.name for s in missing], [s.name for s in present], mismatches)
    finally:
        await admin.close()
