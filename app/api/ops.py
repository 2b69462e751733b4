"""The operations port of processes that serve no API (`consume`, `mllp`): /healthz, /readyz for the
orchestrator's probes and /metrics for Prometheus, which is where the consumers' event metrics live.

It runs inside the process's own event loop beside the Runtime; the process keeps its own signal
handling (uvicorn's is turned off), so SIGTERM still drains the consumers the usual way."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from app.api import health, metrics
from app.api.app import install_auth_state
from app.api.problems import install_problem_handlers
from app.runtime import Runtime


def create_ops_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(title="carecoord operations", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.runtime = runtime
    install_auth_state(app, runtime.settings)
    install_problem_handlers(app)
    app.include_router(health.router)
    app.include_router(metrics.router)
    return app


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the owning command handles SIGINT/SIGTERM


@asynccontextmanager
async def ops_server(runtime: Runtime, host: str, port: int) -> AsyncIterator[None]:
    config = uvicorn.Config(create_ops_app(runtime), host=host, port=port, log_config=None, lifespan="off")
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve(), name="ops-server")
    while not server.started:
        if task.done():
            task.result()  # raise the bind error, if that is why
            raise RuntimeError("operations server stopped before it started")
        await asyncio.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        await task
