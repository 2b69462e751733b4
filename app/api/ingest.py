"""`POST /ingest/hl7v2`: accept an HL7 v2 message over HTTP and publish it to the ADT topic.

The message is decoded first, so a sender gets a 400 naming the bad field instead of a silent
dead letter; 202 is answered only once the broker has acknowledged the record.
"""

from __future__ import annotations

import logging

from aiokafka.errors import KafkaError
from fastapi import APIRouter, Request, status

from app.api.auth import CurrentPrincipal
from app.api.problems import Problem
from app.api.schemas import IngestAccepted
from app.ingest.publish import DecodeError, MessageTooLarge, publish_hl7v2
from app.state.audit import AuditAction, record_audit

log = logging.getLogger(__name__)
router = APIRouter(tags=["ingest"])

HL7_MEDIA_TYPES = ("text/plain", "application/hl7-v2", "x-application/hl7-v2+er7")


@router.post(
    "/ingest/hl7v2",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=IngestAccepted,
    openapi_extra={"requestBody": {"content": {t: {"schema": {"type": "string"}} for t in HL7_MEDIA_TYPES}}},
)
async def ingest_hl7v2(request: Request, principal: CurrentPrincipal) -> IngestAccepted:
    settings = request.app.state.settings
    runtime = request.app.state.runtime
    if not principal.has_any_role(settings.ingest_roles):
        raise Problem(403, "Forbidden", f"ingest requires one of the roles {settings.ingest_roles}")
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in HL7_MEDIA_TYPES:
        raise Problem(415, "Unsupported media type", f"send one of {', '.join(HL7_MEDIA_TYPES)}", field="Content-Type")
    body = await request.body()
    try:
        published = await publish_hl7v2(runtime, body, source="http", media_type=media_type)
    except MessageTooLarge as exc:
        raise Problem(413, "Message too large", str(exc)) from None
    except DecodeError as exc:
        raise Problem(400, "Invalid HL7 v2 message", exc.reason, field=exc.field) from None
    except KafkaError as exc:
        log.warning("publish failed", extra={"error": type(exc).__name__})
        raise Problem(
            503, "Broker unavailable", "the message was not accepted; retry later", headers={"Retry-After": "5"}
        ) from None
    event_id = published.event_id
    async with runtime.sessions() as session, session.begin():
        record_audit(
            session,
            principal.subject,
            principal.roles,
            action=AuditAction.CREATE,
            resource_type="Bundle",
            request=f"POST /ingest/hl7v2 event={event_id}",
        )
    log.info(
        "message accepted",
        extra={"event_id": str(event_id), "partition": published.partition, "offset": published.offset},
    )
    return IngestAccepted(
        event_id=event_id, topic=published.topic, partition=published.partition, offset=published.offset
    )
