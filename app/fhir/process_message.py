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

from aiokafka.errors import KafkaError
from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse

from app.api.auth import CurrentPrincipal
from app.api.problems import Problem
from app.fhir.outcome import FHIR_JSON
from app.ingest.publish import DecodeError, MessageTooLarge, publish_davinci
from app.state.audit import AuditAction, record_audit

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
)
async def process_message(request: Request, principal: CurrentPrincipal) -> JSONResponse:
    settings = request.app.state.settings
    runtime = request.app.state.runtime
    if not principal.has_any_role(settings.ingest_roles):
        raise Problem(403, "Forbidden", f"$process-message requires one of the roles {settings.ingest_roles}")
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in FHIR_MEDIA_TYPES:
        raise Problem(415, "Unsupported media type", f"send {' or '.join(FHIR_MEDIA_TYPES)}", field="Content-Type")
    body = await request.body()
    try:
        published = await publish_davinci(runtime, body, source="http", media_type=media_type)
    except MessageTooLarge as exc:
        raise Problem(413, "Message too large", str(exc)) from None
    except DecodeError as exc:
        raise Problem(400, "Invalid Da Vinci notification Bundle", exc.reason, field=exc.field) from None
    except KafkaError as exc:
        log.warning("publish failed", extra={"error": type(exc).__name__})
        raise Problem(
            503, "Broker unavailable", "the message was not accepted; retry later", headers={"Retry-After": "5"}
        ) from None
    event_id = str(published.event_id)
    async with runtime.sessions() as session, session.begin():
        record_audit(
            session,
            principal.subject,
            principal.roles,
            action=AuditAction.CREATE,
            resource_type="Bundle",
            request=f"POST {PATH} event={event_id}",
        )
    log.info(
        "message accepted",
        extra={"event_id": event_id, "partition": published.partition, "offset": published.offset},
    )
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "information",
                "code": "informational",
                "diagnostics": (
                    f"accepted message Bundle {published.message_id} as event {event_id} "
                    f"({published.topic} partition {published.partition} offset {published.offset}); "
                    "it is applied asynchronously"
                ),
            }
        ],
    }
    return JSONResponse(
        outcome, status_code=status.HTTP_202_ACCEPTED, media_type=FHIR_JSON, headers={EVENT_ID_HEADER: event_id}
    )
