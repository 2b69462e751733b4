"""Error responses: RFC 9457 problem+json on the REST API, FHIR OperationOutcome under /fhir.

Handlers raise one kind of error (`Problem`, or FastAPI's own); the path decides the rendering, so
every FHIR endpoint answers errors as OperationOutcome without each one having to remember to.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from app.api.request_body import BodyRefused
from app.fhir.outcome import outcome_response

PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.detail = detail
        self.field = field
        self.headers = headers
        self.extra = extra


def problem_response(
    status: int,
    title: str,
    detail: str | None = None,
    *,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _is_fhir(request: Request) -> bool:
    return request.url.path == "/fhir" or request.url.path.startswith("/fhir/")


def _respond(
    request: Request,
    status: int,
    title: str,
    detail: str | None,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
    fields: list[str] | None = None,
    **extra: Any,
) -> JSONResponse:
    if _is_fhir(request):
        expressions = fields or ([field] if field else None)
        return outcome_response(
            status, f"{title}: {detail}" if detail else title, expressions=expressions, headers=headers
        )
    return problem_response(status, title, detail, instance=request.url.path, headers=headers, field=field, **extra)


async def respond_plain(scope: Scope, receive: Receive, send: Send, status: int, title: str, detail: str) -> None:
    """For middleware, outside the exception handlers: the same rendering by path."""
    await _respond(Request(scope, receive), status, title, detail)(scope, receive, send)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return _respond(request, exc.status, exc.title, exc.detail, field=exc.field, headers=exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": ".".join(str(p) for p in err["loc"] if p not in ("query", "body", "path", "header")),
                "in": str(err["loc"][0]) if err["loc"] else None,
                "message": err["msg"],
            }
            for err in exc.errors()
        ]
        return _respond(
            request,
            422,
            "Request is not valid",
            "; ".join(f"{e['field']}: {e['message']}" for e in errors) if errors else None,
            field=errors[0]["field"] if errors else None,
            fields=[e["field"] for e in errors],
            errors=errors,
        )

    @app.exception_handler(BodyRefused)
    async def _body(request: Request, exc: BodyRefused) -> JSONResponse:
        return _respond(request, exc.status_code, exc.title, exc.reason)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _respond(request, exc.status_code, str(exc.detail), None, headers=getattr(exc, "headers", None))
