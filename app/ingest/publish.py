"""Validate an inbound message and publish it to its feed's topic, keyed by patient.

Shared by every front door (HTTP, MLLP, FHIR $process-message) so they accept and refuse exactly
what the consumer would. The caller answers the sender only after `publish_hl7v2` /
`publish_davinci` returns, i.e. after the broker acked.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError

from app.consumers.davinci_decode import parse_fhir_json
from app.consumers.fhir_handler import FhirHandler
from app.consumers.notice_handler import NoticeHandler
from app.encounters.notice import DecodeError
from app.runtime import Runtime
from app.state.inbound import event_id_for

__all__ = ["DecodeError", "MessageTooLarge", "Published", "publish_davinci", "publish_fhir", "publish_hl7v2"]


class MessageTooLarge(ValueError):
    """A message to refuse for its size, permanently (HTTP 413, MLLP AR with ERR-3 104): over the ingest
    limit, or more than the broker takes. Never a retry answer: a resend is just as large."""

    def __init__(self, size: int, limit: int | None) -> None:
        super().__init__(
            f"message is {size} bytes; the limit is {limit}"
            if limit is not None
            else f"message is {size} bytes: more than the event broker accepts"
        )
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


async def publish_fhir(
    runtime: Runtime,
    body: bytes,
    *,
    source: str,
    media_type: str = "application/fhir+json",
    expect: str | None = None,
) -> Published:
    """FHIR clinical resources to the FHIR topic; `expect` is the resourceType the endpoint takes
    ("Bundle" means a transaction or batch Bundle). Raises like `publish_hl7v2`."""
    if expect is not None:
        data = parse_fhir_json(body, expect)
        if data.get("resourceType") != expect:
            raise DecodeError(
                f"this endpoint takes a {expect}, not {str(data.get('resourceType'))[:40]!r}", "resourceType"
            )
        if expect == "Bundle" and data.get("type") not in ("transaction", "batch"):
            raise DecodeError("POST /fhir takes a transaction or batch Bundle", "Bundle.type")
    handler = runtime.fhir_handler
    assert handler is not None
    return await _publish(
        runtime, handler, runtime.settings.topics.fhir, body, source, media_type, check=handler.check_against_state
    )


async def _publish(
    runtime: Runtime,
    handler: NoticeHandler | FhirHandler | None,
    topic: str,
    body: bytes,
    source: str,
    media_type: str,
    *,
    check: Callable[[Any], Awaitable[None]] | None = None,
) -> Published:
    settings = runtime.settings
    if len(body) > settings.ingest_max_bytes:
        raise MessageTooLarge(len(body), settings.ingest_max_bytes)
    assert handler is not None and runtime.publisher is not None
    msg = handler.decode(body)
    if check is not None:
        await check(msg)
    event_id = event_id_for(msg.idempotency_key)
    try:
        meta = await runtime.publisher.publish(
            topic,
            body,
            key=msg.partition_key,
            headers={"carecoord-event-id": str(event_id), "carecoord-source": source, "content-type": media_type},
        )
    except (MessageSizeTooLargeError, RecordListTooLargeError):
        # Kafka error 10 / 18, from the broker or from the producer's own check of the configured broker
        # limit: resending the same bytes can never succeed, so it is a refusal, not a broker outage.
        limit = settings.kafka_max_message_bytes
        raise MessageTooLarge(len(body), limit if limit is not None and limit < len(body) else None) from None
    return Published(event_id, msg.message_id, meta.topic, meta.partition, meta.offset)
