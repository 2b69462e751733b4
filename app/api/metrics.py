"""`GET /metrics` (Prometheus text format) and the HTTP latency middleware.

The endpoint is authenticated like every other: Prometheus scrapes with a bearer token of a metrics
role (`authorization: {credentials_file: ...}` in its scrape config, docs/operations.md)."""

from __future__ import annotations

import logging
import time
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.auth import Principal, role_gate
from app.metrics import HTTP_LATENCY, render

router = APIRouter(tags=["operations"])
access_log = logging.getLogger("carecoord.access")
UNMATCHED = "unmatched"  # 404s and probes of unknown paths: one series, not one per path


MetricsPrincipal = Annotated[Principal, Depends(role_gate("metrics_roles", "admin_roles", what="metrics"))]


@router.get("/metrics", response_class=Response)
async def metrics(principal: MetricsPrincipal) -> Response:
    """Prometheus text format: this process's metrics (all workers' with `serve --workers N`)."""
    body, content_type = render()
    return Response(body, media_type=content_type)


class HttpLatencyMiddleware:
    """Times every request by its route template (`/tasks/{task_id}`): a raw path can carry identifiers.
    It also writes the access log (uvicorn's is off: it prints the full path and query string), with the
    method, route template, status and duration only."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED
            elapsed = time.perf_counter() - started
            HTTP_LATENCY.labels(scope["method"], template, str(status)).observe(elapsed)
            access_log.info(
                "request",
                extra={"method": scope["method"], "route": template, "status": status, "ms": round(elapsed * 1000, 1)},
            )


def install_http_metrics(app: FastAPI) -> None:
    app.add_middleware(HttpLatencyMiddleware)
