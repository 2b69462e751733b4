"""The OpenAPI document as the API really answers: errors are problem+json (REST) or OperationOutcome
(FHIR), FHIR bodies are application/fhir+json. Clients and the schemathesis run in CI read this
document, so it must describe every status and media type a route can return."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.api.problems import PROBLEM_JSON
from app.fhir.outcome import FHIR_JSON

ERROR_STATUSES = {
    "400": "Bad request (malformed body or parameter)",
    "401": "Missing, invalid or expired bearer token",
    "403": "The caller's role, team or scope does not allow this",
    "404": "Not found, or not visible to the caller",
    "409": "Conflicts with the resource's current state",
    "412": "If-Match names a stale version",
    "413": "Body too large",
    "415": "Unsupported media type",
    "422": "A field is not valid (the response names it)",
    "428": "If-Match is required",
    "503": "A dependency (database, broker) is unavailable; retry",
}

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "field": {"type": "string"},
    },
}
OPERATION_OUTCOME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["resourceType", "issue"],
    "properties": {"resourceType": {"const": "OperationOutcome"}, "issue": {"type": "array"}},
}
FHIR_RESOURCE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["resourceType"],
    "properties": {"resourceType": {"type": "string"}},
}


def _is_fhir(path: str) -> bool:
    return path == "/fhir" or path.startswith("/fhir/")


def _document_errors(path: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    if _is_fhir(path):
        error = {FHIR_JSON: {"schema": OPERATION_OUTCOME_SCHEMA}}
    else:
        error = {PROBLEM_JSON: {"schema": PROBLEM_SCHEMA}}
    for status, description in ERROR_STATUSES.items():
        # FastAPI's own 422 (HTTPValidationError) is not what the handlers send: replace it.
        if status not in responses or status == "422":
            responses[status] = {"description": description, "content": error}
    if _is_fhir(path):
        for status, response in responses.items():
            content = response.get("content")
            if status.startswith("2") and content and "application/json" in content:
                response["content"] = {FHIR_JSON: content.pop("application/json") or {"schema": FHIR_RESOURCE_SCHEMA}}


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, routes=app.routes)
            for path, item in document.get("paths", {}).items():
                for method, operation in item.items():
                    if method in {"get", "put", "post", "patch", "delete"}:
                        _document_errors(path, operation)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
