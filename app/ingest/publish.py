"""Validate an inbound HL7 v2 message and publish it to the ADT topic, keyed by patient.

Shared by every front door (HTTP, MLLP) so they accept and refuse exactly the same messages.
The caller answers the sender only after `publish_hl7v2` returns, i.e. after the broker acked.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from app.encounters.notice import DecodeError
from app.messaging.keys import patient_partition_key
from app.runtime import Runtime
from app.state.inbound import event_id_for

__all__ = ["DecodeError", "MessageTooLarge", "Published", "publish_hl7v2"]


class MessageTooLarge(ValueError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message is {size} bytes; the limit is {limit}")
        self.size = size
        self.limit = limit


@dataclass(frozen=True, slots=True)
class Published:
    event_id: uuid.UUID
    message_id: str
    topic: str
    partition: int
    offset: int


async def publish_hl7v2(runtime: Runtime, body: bytes, *, source: str, media_type: str = "text/plain") -> Published:
    """Raises MessageTooLarge or DecodeError for a message to refuse; KafkaError if the broker fails."""
    settings = runtime.settings
    if len(body) > settings.ingest_max_bytes:
        raise MessageTooLarge(len(body), settings.ingest_max_bytes)
    assert runtime.adt_handler is not None and runtime.publisher is not None
    msg = runtime.adt_handler.decode(body)
    event_id = event_id_for(msg.idempotency_key)
    meta = await runtime.publisher.publish(
        settings.topics.adt,
        body,
        key=patient_partition_key(msg.patient_key.system, msg.patient_key.value),
        headers={"carecoord-event-id": str(event_id), "carecoord-source": source, "content-type": media_type},
    )
    return Published(event_id, msg.message_id, meta.topic, meta.partition, meta.offset)
