"""The server's FHIR R4 CapabilityStatement (`GET /fhir/metadata`).

`/fhir/metadata` is served without authentication, as FHIR clients (and SMART on FHIR discovery)
expect: it describes what the server can do and holds no patient data. Everything else under
/fhir needs the bearer JWT, which the statement's `rest.security` says.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from app import __version__, clock

FHIR_VERSION = "4.0.1"
PROCESS_MESSAGE = "http://hl7.org/fhir/OperationDefinition/MessageHeader-process-message"
RESTFUL_SECURITY = "http://terminology.hl7.org/CodeSystem/restful-security-service"

ENCOUNTER_SEARCH_PARAMS: tuple[dict[str, str], ...] = (
    {
        "name": "patient",
        "definition": "http://hl7.org/fhir/SearchParameter/clinical-patient",
        "type": "reference",
        "documentation": "The patient: `id`, `Patient/id` or an absolute URL ending in `Patient/id`.",
    },
    {
        "name": "date",
        "definition": "http://hl7.org/fhir/SearchParameter/clinical-date",
        "type": "date",
        "documentation": "Encounter.period, with prefixes eq ne gt lt ge le sa eb ap (range semantics; "
        "a missing end means ongoing). Values without a zone use the facility time zone. Repeat to AND.",
    },
    {
        "name": "class",
        "definition": "http://hl7.org/fhir/SearchParameter/Encounter-class",
        "type": "token",
        "documentation": "Encounter.class: `code`, `system|code`, `|code` or `system|`.",
    },
    {
        "name": "status",
        "definition": "http://hl7.org/fhir/SearchParameter/Encounter-status",
        "type": "token",
        "documentation": "Encounter.status (http://hl7.org/fhir/encounter-status).",
    },
)


PATIENT_PARAM = ENCOUNTER_SEARCH_PARAMS[0]
CODE_PARAM = {
    "name": "code",
    "definition": "http://hl7.org/fhir/SearchParameter/clinical-code",
    "type": "token",
    "documentation": "Observation.code: a LOINC `code` or `http://loinc.org|code`; comma-separate to OR.",
}
CREATE_DOC = (
    "create is accepted asynchronously (202 and an OperationOutcome naming the event id) and is conditional "
    "on identifier: resending applies once. See docs/fhir-clinical.md."
)

TASK_SEARCH_PARAMS: tuple[dict[str, str], ...] = (
    {
        "name": "owner",
        "definition": "http://hl7.org/fhir/SearchParameter/Task-owner",
        "type": "reference",
        "documentation": "The owner's user id (the token `sub`) or `Practitioner/{id}`.",
    },
    {
        "name": "status",
        "definition": "http://hl7.org/fhir/SearchParameter/Task-status",
        "type": "token",
        "documentation": "Task.status (http://hl7.org/fhir/task-status); comma-separate to OR.",
    },
    {
        "name": "patient",
        "definition": "http://hl7.org/fhir/SearchParameter/Task-patient",
        "type": "reference",
        "documentation": "Task.for: `id`, `Patient/id` or an absolute URL ending in `Patient/id`.",
    },
    {
        "name": "code",
        "definition": "http://hl7.org/fhir/SearchParameter/Task-code",
        "type": "token",
        "documentation": "The task type: `code` or `system|code` in the server's task-type CodeSystem.",
    },
    {
        "name": "period",
        "type": "date",
        "documentation": "carecoord matches the due time (Task.restriction.period.end), not executionPeriod "
        "(not tracked); prefixes eq ne gt lt ge le sa eb ap.",
    },
    {
        "name": "_lastUpdated",
        "definition": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated",
        "type": "date",
        "documentation": "meta.lastUpdated, with prefixes.",
    },
)
TASK_DOC = (
    "Care-coordination tasks. update (PUT) and patch (JSON Patch) change status and owner only; If-Match "
    'W/"versionId" is honoured (412 when stale); a task someone else owns cannot be claimed (409). '
    "_sort: period (due, default), _lastUpdated, authored-on, priority, each with - for descending."
)


def _task() -> dict[str, Any]:
    return {
        "type": "Task",
        "documentation": TASK_DOC,
        "interaction": [{"code": "read"}, {"code": "search-type"}, {"code": "update"}, {"code": "patch"}],
        "versioning": "versioned-update",
        "readHistory": False,
        "updateCreate": False,
        "searchParam": [dict(p) for p in TASK_SEARCH_PARAMS],
    }


def _clinical(resource_type: str, search: tuple[dict[str, str], ...] = ()) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "type": resource_type,
        "documentation": CREATE_DOC,
        "interaction": [{"code": "create"}] + ([{"code": "search-type"}] if search else []),
        "versioning": "versioned" if resource_type != "Encounter" else "no-version",
        "conditionalCreate": True,
    }
    if search:
        resource["searchParam"] = [dict(p) for p in search]
    return resource


CAREPLAN_SEARCH_PARAMS: tuple[dict[str, str], ...] = (
    {
        "name": "subject",
        "definition": "http://hl7.org/fhir/SearchParameter/CarePlan-subject",
        "type": "reference",
        "documentation": "The patient: `id`, `Patient/id` or an absolute URL ending in `Patient/id`.",
    },
    {
        "name": "patient",
        "definition": "http://hl7.org/fhir/SearchParameter/clinical-patient",
        "type": "reference",
        "documentation": "Same as subject (every CarePlan here is about a patient).",
    },
    {
        "name": "status",
        "definition": "http://hl7.org/fhir/SearchParameter/CarePlan-status",
        "type": "token",
        "documentation": "CarePlan.status (http://hl7.org/fhir/request-status); comma-separate to OR.",
    },
    {
        "name": "_id",
        "definition": "http://hl7.org/fhir/SearchParameter/Resource-id",
        "type": "token",
        "documentation": "CarePlan id.",
    },
)
PATIENT_SEARCH_PARAMS: tuple[dict[str, str], ...] = (
    {
        "name": "identifier",
        "definition": "http://hl7.org/fhir/SearchParameter/Patient-identifier",
        "type": "token",
        "documentation": "`system|value`, `value` (any system) or `system|` (any value in the system).",
    },
    {
        "name": "_id",
        "definition": "http://hl7.org/fhir/SearchParameter/Resource-id",
        "type": "token",
        "documentation": "Patient id.",
    },
)
CAREPLAN_RESOURCE: dict[str, Any] = {
    "type": "CarePlan",
    "documentation": "One active plan per patient. Goals and the care team are contained resources; "
    "activities reference Task; PCP sign-off is the urn:carecoord:fhir:extension:pcp-sign-off extension. "
    "Update needs If-Match (428 without, 412 when stale). Only plans of patients in the caller's scope "
    "are visible. See docs/care-plans.md.",
    "interaction": [
        {"code": "read"},
        {"code": "vread"},
        {"code": "update"},
        {"code": "history-instance"},
        {"code": "create"},
        {"code": "search-type"},
    ],
    "versioning": "versioned-update",
    "readHistory": True,
    "updateCreate": False,
    "conditionalCreate": False,
    "conditionalUpdate": False,
    "searchParam": [dict(p) for p in CAREPLAN_SEARCH_PARAMS],
}
PATIENT_RESOURCE: dict[str, Any] = {
    "type": "Patient",
    "documentation": "Read and search only; patients come from the feeds and rosters. Only patients in the "
    "caller's scope (a visible task or attribution to one of the caller's teams) are visible.",
    "interaction": [{"code": "read"}, {"code": "search-type"}],
    "versioning": "no-version",
    "readHistory": False,
    "updateCreate": False,
    "searchParam": [dict(p) for p in PATIENT_SEARCH_PARAMS],
}
# Access control (docs/security.md): Part 2 consents (Part 2 permission) and the audit trail (auditors).
ACCESS_RESOURCES: tuple[dict[str, Any], ...] = (
    {
        "type": "Consent",
        "documentation": "42 CFR Part 2 consents, recorded with POST /patients/{id}/consents.",
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        "searchParam": [dict(PATIENT_PARAM)],
    },
    {
        "type": "AuditEvent",
        "documentation": "The audit trail of patient-data access; auditors only.",
        "interaction": [{"code": "search-type"}],
        "searchParam": [
            {
                "name": "patient",
                "definition": "http://hl7.org/fhir/SearchParameter/AuditEvent-patient",
                "type": "reference",
            },
            {
                "name": "agent",
                "definition": "http://hl7.org/fhir/SearchParameter/AuditEvent-agent",
                "type": "reference",
                "documentation": "the user id (token sub)",
            },
            {"name": "date", "definition": "http://hl7.org/fhir/SearchParameter/AuditEvent-date", "type": "date"},
        ],
    },
)


def capability_statement(base_url: str, *, now: datetime | None = None) -> dict[str, Any]:
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": (now or clock.now()).astimezone(UTC).isoformat(),
        "publisher": "carecoord",
        "kind": "instance",
        "software": {"name": "carecoord", "version": __version__},
        "implementation": {"description": "carecoord care-coordination FHIR endpoint", "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "documentation": "Errors are OperationOutcome. Unknown search parameters are ignored unless "
                "the request says `Prefer: handling=strict` (then 400). 42 CFR Part 2 encounters are visible "
                "only to Part 2 roles.",
                "security": {
                    "cors": False,
                    "service": [
                        {"coding": [{"system": RESTFUL_SECURITY, "code": "OAuth"}]},
                        {"coding": [{"system": RESTFUL_SECURITY, "code": "SMART-on-FHIR"}]},
                    ],
                    "description": "Authorization: Bearer <JWT> (HS* or RS*/ES* via JWKS; claims sub, roles, "
                    "teams, SMART scope) on every endpoint except /fhir/metadata. 42 CFR Part 2 data needs the "
                    "Part 2 permission and the patient's consent (docs/security.md).",
                },
                "resource": [
                    {
                        "type": "Encounter",
                        "documentation": CREATE_DOC,
                        "interaction": [{"code": "read"}, {"code": "search-type"}, {"code": "create"}],
                        "versioning": "no-version",
                        "readHistory": False,
                        "updateCreate": False,
                        "conditionalCreate": True,
                        "searchParam": [dict(p) for p in ENCOUNTER_SEARCH_PARAMS],
                    },
                    _clinical("Observation", (PATIENT_PARAM, CODE_PARAM)),
                    _clinical("Procedure"),
                    _clinical("DocumentReference"),
                    _clinical("Questionnaire"),
                    _clinical("QuestionnaireResponse", (PATIENT_PARAM,)),
                    _task(),
                    dict(CAREPLAN_RESOURCE),
                    dict(PATIENT_RESOURCE),
                    *ACCESS_RESOURCES,
                ],
                "interaction": [{"code": "transaction"}, {"code": "batch"}],
                "operation": [{"name": "process-message", "definition": PROCESS_MESSAGE}],
            }
        ],
    }
