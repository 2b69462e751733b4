"""Validate an inbound message and publish it to its feed's topic, keyed by patient.

Shared by every front door (HTTP, MLLP, FHIR $process-message) so they accept and refuse exactly
what the consumer would. The caller answers the sender only after `publish_hl7v2` /
`publish_davinci` returns, i.e. after the broker acked.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from app.consumers.notice_handler import NoticeHandler
from app.encounters.notice import DecodeError
from app.messaging.keys import patient_partition_key
from app.runtime import Runtime
from app.state.inbound import event_id_for

__all__ = ["DecodeError", "MessageTooLarge", "Published", "publish_davinci", "publish_hl7v2"]


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
    return await _publish(runtime, runtime.adt_handler, runtime.settings.topics.adt, body, source, media_type)


async def publish_davinci(
    runtime: Runtime, body: bytes, *, source: str, media_type: str = "application/fhir+json"
) -> Published:
    """A Da Vinci notification Bundle to the ENS topic; raises like `publish_hl7v2`."""
    return await _publish(runtime, runtime.ens_handler, runtime.settings.topics.ens, body, source, media_type)


async def _publish(
    runtime: Runtime, handler: NoticeHandler | None, topic: str, body: bytes, source: str, media_type: str
) -> Published:
    settings = runtime.settings
    if len(body) > settings.ingest_max_bytes:
        raise MessageTooLarge(len(body), settings.ingest_max_bytes)
    assert handler is not None and runtime.publisher is not None
    msg = handler.decode(body)
    event_id = event_id_for(msg.idempotency_key)
    meta = await runtime.publisher.publish(
        topic,
        body,
        key=patient_partition_key(msg.patient_key.system, msg.patient_key.value),
        headers={"carecoord-event-id": str(event_id), "carecoord-source": source, "content-type": media_type},
    )
    return Published(event_id, msg.message_id, meta.topic, meta.partition, meta.offset)
