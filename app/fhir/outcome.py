"""FHIR R4 OperationOutcome for errors on FHIR endpoints (the REST API uses problem+json instead)."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

FHIR_JSON = "application/fhir+json"

# HTTP status -> FHIR issue-type code (http://hl7.org/fhir/issue-type).
ISSUE_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    409: "conflict",
    410: "deleted",
    412: "conflict",
    413: "too-long",
    415: "not-supported",
    422: "invalid",
    429: "throttled",
    503: "transient",
}


def operation_outcome(
    status: int, diagnostics: str, *, expressions: list[str] | None = None, severity: str = "error"
) -> dict[str, Any]:
    issue: dict[str, Any] = {
        "severity": severity,
        "code": ISSUE_CODES.get(status, "exception" if status >= 500 else "processing"),
        "diagnostics": diagnostics,
    }
    if expressions:
        issue["expression"] = expressions
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def outcome_response(
    status: int, diagnostics: str, *, expressions: list[str] | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        operation_outcome(status, diagnostics, expressions=expressions),
        status_code=status,
        media_type=FHIR_JSON,
        headers=headers,
    )
