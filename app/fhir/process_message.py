"""`POST /fhir/$process-message`: Da Vinci Unsolicited Notifications (admit / discharge / transfer).

The body is the FHIR message Bundle itself (the IG does not use the `async` / `response-url`
parameters and expects no response message). The Bundle is decoded exactly as the ENS consumer
will decode it, so an unusable one is refused with 400 and an OperationOutcome whose
`issue[0].expression` names the element, instead of becoming a silent dead letter. A usable one is
published to the ENS topic, keyed by patient, and answered only after the broker acknowledged it:

- 202 Accepted ("the receiving system has accepted custody of the message", FHIR $process-message)
  with an informational OperationOutcome naming the event id (also in the `Carecoord-Event-Id`
  header); the consumer applies it asynchronously. The Da Vinci IG allows 200, 202 or 204 on success.
- Resending the same Bundle.id is accepted again with the same event id and applied once.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse

from app.api.auth import CurrentPrincipal
from app.api.request_body import body_cap
from app.api.scopes import scoped
from app.fhir.outcome import FHIR_JSON
from app.ingest.http_front_door import accept
from app.ingest.publish import Published, publish_davinci

log = logging.getLogger(__name__)
router = APIRouter(tags=["fhir"])

PATH = "/fhir/$process-message"
FHIR_MEDIA_TYPES = (FHIR_JSON, "application/json")  # FHIR R4 JSON; XML is not supported
EVENT_ID_HEADER = "Carecoord-Event-Id"


@router.post(
    PATH,
    status_code=status.HTTP_202_ACCEPTED,
    response_class=JSONResponse,
    summary="Accept a Da Vinci notification message Bundle (admit, discharge, transfer)",
    openapi_extra={"requestBody": {"content": {t: {"schema": {"type": "object"}} for t in FHIR_MEDIA_TYPES}}},
    dependencies=scoped("Bundle", interaction="c"),
)
@body_cap("ingest_max_bytes", decodes_own_json=True)
async def process_message(request: Request, principal: CurrentPrincipal) -> JSONResponse:
    published = await accept(
        request,
        principal,
        media_types=FHIR_MEDIA_TYPES,
        publish=publish_davinci,
        invalid_title="Invalid Da Vinci notification Bundle",
        request_line=f"POST {PATH}",
    )
    return accepted_response(published, f"message Bundle {published.message_id}")


def accepted_response(published: Published, what: str) -> JSONResponse:
    """202 with an informational OperationOutcome naming the event id (also in `Carecoord-Event-Id`)."""
    event_id = str(published.event_id)
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "information",
                "code": "informational",
                "diagnostics": (
                    f"accepted {what} as event {event_id} "
                    f"({published.topic} partition {published.partition} offset {published.offset}); "
                    "it is applied asynchronously"
                ),
            }
        ],
    }
    return JSONResponse(
        outcome, status_code=status.HTTP_202_ACCEPTED, media_type=FHIR_JSON, headers={EVENT_ID_HEADER: event_id}
    )
