"""Liveness and readiness (unauthenticated: probes carry no patient data)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.api.problems import problem_response

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
async def readyz(request: Request) -> JSONResponse | dict[str, object]:
    runtime = request.app.state.runtime
    checks = {
        "database": await runtime.database_ready(),
        "broker": runtime.publisher is not None and await runtime.publisher.broker_reachable(),
        "consumers": all(c.ready for c in runtime.consumers),
    }
    if all(checks.values()):
        return {"status": "ready", "checks": checks}
    failing = ", ".join(name for name, ok in checks.items() if not ok)
    return problem_response(503, "Not ready", f"failing checks: {failing}", checks=checks)
