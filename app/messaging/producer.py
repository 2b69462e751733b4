"""Publishing to Kafka, answering only after the broker acknowledged the record."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka.structs import RecordMetadata

from app.messaging.kafka_clients import KafkaConnection
from app.settings import Settings


class Publisher:
    def __init__(self, kafka: KafkaConnection, settings: Settings) -> None:
        # max_request_size defaults to 1 MiB in aiokafka: a message of exactly the ingest limit plus its
        # key and headers would not fit. It is the broker's limit as configured (settings), so a message
        # over it fails here with the same MessageSizeTooLargeError a broker answers (Kafka error 10).
        self._producer = kafka.producer(
            acks="all",
            enable_idempotence=settings.kafka_enable_idempotence,
            max_request_size=settings.broker_message_max_bytes,
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(self, topic: str, value: bytes, *, key: bytes | None, headers: dict[str, str]) -> RecordMetadata:
        return await self._producer.send_and_wait(
            topic, value, key=key, headers=[(k, v.encode()) for k, v in headers.items()]
        )

    async def publish_many(
        self, topic: str, records: Sequence[tuple[bytes | None, bytes]], *, headers: dict[str, str]
    ) -> list[RecordMetadata]:
        """(key, value) records sent together, answered when the broker acked every one; raises if any
        was not. One partition's records go in the order given."""
        encoded = [(k, v.encode()) for k, v in headers.items()]
        sent = [await self._producer.send(topic, value, key=key, headers=encoded) for key, value in records]
        return list(await asyncio.gather(*sent))

    async def broker_reachable(self) -> bool:
        try:
            await self._producer.client.fetch_all_metadata()
        except Exception:
            return False
        return True
