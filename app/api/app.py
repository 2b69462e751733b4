"""FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import __version__
from app.api import (
    care_plans,
    consents,
    data_quality,
    dead_letters,
    health,
    ingest,
    measures,
    metrics,
    referrals,
    rosters,
    screenings,
    task_actions,
    tasks,
    worklists,
)
from app.api.auth import hs_secret
from app.api.jwks import JwksCache
from app.api.metrics import install_http_metrics
from app.api.openapi import install_openapi
from app.api.problems import install_problem_handlers
from app.api.request_body import RequestLimitsMiddleware
from app.api.token_cache import VerifiedTokens
from app.fhir import audit_events as fhir_audit_events
from app.fhir import careplan_routes as fhir_careplans
from app.fhir import clinical as fhir_clinical
from app.fhir import consents as fhir_consents
from app.fhir import patient_routes as fhir_patients
from app.fhir import process_message
from app.fhir import routes as fhir_routes
from app.fhir import task_routes as fhir_task_routes
from app.gc_tuning import tune_gc_after_startup
from app.logging_config import configure_logging
from app.runtime import Runtime
from app.settings import Settings, get_settings
from app.ui.install import install_ui


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    """Build the app. With `runtime` given (tests), the caller owns its lifecycle."""
    settings = settings or (runtime.settings if runtime else get_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if runtime is not None:
            app.state.runtime = runtime
            yield
            return
        owned = Runtime(settings, run_consumers=settings.run_consumers)
        app.state.runtime = owned
        await owned.start()
        tune_gc_after_startup(settings)
        try:
            yield
        finally:
            await owned.stop()

    app = FastAPI(title="carecoord", version=__version__, lifespan=lifespan)
    install_auth_state(app, settings)
    if runtime is not None:
        app.state.runtime = runtime
    install_problem_handlers(app)
    install_openapi(app)
    app.add_middleware(RequestLimitsMiddleware, settings=settings)  # inside the metrics/access-log middleware
    install_http_metrics(app)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(tasks.router)
    app.include_router(referrals.router)
    app.include_router(task_actions.router)
    app.include_router(worklists.router)
    app.include_router(measures.router)
    app.include_router(ingest.router)
    app.include_router(dead_letters.router)
    app.include_router(data_quality.router)
    app.include_router(rosters.router)
    app.include_router(fhir_routes.router)
    app.include_router(fhir_task_routes.router)
    app.include_router(process_message.router)
    app.include_router(fhir_clinical.router)  # after $process-message: its POST paths are literal
    app.include_router(screenings.router)
    app.include_router(care_plans.router)
    app.include_router(fhir_careplans.router)
    app.include_router(fhir_patients.router)
    app.include_router(consents.router)
    app.include_router(fhir_consents.router)
    app.include_router(fhir_audit_events.router)
    install_ui(app)  # the web UI under /ui (docs/ui.md)
    return app


def install_auth_state(app: FastAPI, settings: Settings) -> None:
    """What the bearer-token dependency reads: settings, the HS* secret, the identity provider's keys."""
    app.state.settings = settings
    app.state.jwt_secret = hs_secret(settings)
    app.state.verified_tokens = VerifiedTokens(settings.jwt_cache_size, settings.jwt_cache_ttl_s)
    app.state.jwks = (
        JwksCache(settings.jwt_jwks_url, settings.jwt_jwks_ttl_s, settings.jwt_jwks_refetch_min_s)
        if settings.jwt_jwks_url
        else None
    )


def worker_app() -> FastAPI:
    """The app of one `serve --workers N` process: a fresh interpreter, so logging is set up here too."""
    settings = get_settings()
    configure_logging(settings.log_level)
    return create_app(settings)
