"""The steps every HTTP front door shares: who may send, what media type, size, decode, publish,
audit. Each endpoint only shapes its own answer (REST JSON, or a FHIR OperationOutcome)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiokafka.errors import KafkaError
from fastapi import Request

from app.api.audit import audit
from app.api.auth import Principal
from app.api.problems import Problem
from app.ingest.publish import DecodeError, MessageTooLarge, Published
from app.runtime import Runtime
from app.state.audit import AuditAction

log = logging.getLogger(__name__)

Publish = Callable[..., Awaitable[Published]]


async def accept(
    request: Request,
    principal: Principal,
    *,
    media_types: tuple[str, ...],
    publish: Publish,
    invalid_title: str,
    request_line: str,
    resource_type: str = "Bundle",
) -> Published:
    settings = request.app.state.settings
    runtime: Runtime = request.app.state.runtime
    if not principal.has_any_role(settings.ingest_roles):
        raise Problem(403, "Forbidden", f"sending messages requires one of the roles {settings.ingest_roles}")
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in media_types:
        raise Problem(415, "Unsupported media type", f"send one of {', '.join(media_types)}", field="Content-Type")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > settings.ingest_max_bytes:
        # Refused before reading: an oversize body is never buffered.
        raise Problem(413, "Message too large", f"the limit is {settings.ingest_max_bytes} bytes")
    body = await request.body()
    try:
        published = await publish(runtime, body, source="http", media_type=media_type)
    except MessageTooLarge as exc:
        raise Problem(413, "Message too large", str(exc)) from None
    except DecodeError as exc:
        raise Problem(exc.http_status, invalid_title, exc.reason, field=exc.field) from None
    except KafkaError as exc:
        log.warning("publish failed", extra={"error": type(exc).__name__})
        raise Problem(
            503, "Broker unavailable", "the message was not accepted; retry later", headers={"Retry-After": "5"}
        ) from None
    async with runtime.sessions() as session, session.begin():
        audit(
            session,
            request,
            principal,
            action=AuditAction.CREATE,
            resource_type=resource_type,
            detail=f"event={published.event_id}",
        )
    log.info(
        "message accepted",
        extra={"event_id": str(published.event_id), "partition": published.partition, "offset": published.offset},
    )
    return published
