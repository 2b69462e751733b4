"""`POST /ingest/hl7v2`: accept an HL7 v2 message over HTTP and publish it to the ADT topic.

The message is decoded first, so a sender gets a 400 naming the bad field instead of a silent
dead letter; 202 is answered only once the broker has acknowledged the record.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from app.api.auth import CurrentPrincipal
from app.api.request_body import body_cap
from app.api.schemas import IngestAccepted
from app.api.scopes import scoped
from app.ingest.http_front_door import accept
from app.ingest.publish import publish_hl7v2

router = APIRouter(tags=["ingest"])

HL7_MEDIA_TYPES = ("text/plain", "application/hl7-v2", "x-application/hl7-v2+er7")


@router.post(
    "/ingest/hl7v2",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=IngestAccepted,
    openapi_extra={"requestBody": {"content": {t: {"schema": {"type": "string"}} for t in HL7_MEDIA_TYPES}}},
    dependencies=scoped("Encounter", interaction="c"),  # ADT messages create and update encounters
)
@body_cap("ingest_max_bytes")
async def ingest_hl7v2(request: Request, principal: CurrentPrincipal) -> IngestAccepted:
    published = await accept(
        request,
        principal,
        media_types=HL7_MEDIA_TYPES,
        publish=publish_hl7v2,
        invalid_title="Invalid HL7 v2 message",
        request_line="POST /ingest/hl7v2",
    )
    return IngestAccepted(
        event_id=published.event_id, topic=published.topic, partition=published.partition, offset=published.offset
    )
