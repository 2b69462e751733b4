"""The server's FHIR R4 CapabilityStatement (`GET /fhir/metadata`).

`/fhir/metadata` is served without authentication, as FHIR clients (and SMART on FHIR discovery)
expect: it describes what the server can do and holds no patient data. Everything else under
/fhir needs the bearer JWT, which the statement's `rest.security` says.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from app import __version__

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


def capability_statement(base_url: str, *, now: datetime | None = None) -> dict[str, Any]:
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": (now or datetime.now(UTC)).astimezone(UTC).isoformat(),
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
                    "service": [{"coding": [{"system": RESTFUL_SECURITY, "code": "OAuth"}]}],
                    "description": "Authorization: Bearer <JWT> (HS256; claims sub, roles, teams) on every "
                    "endpoint except /fhir/metadata.",
                },
                "resource": [
                    {
                        "type": "Encounter",
                        "interaction": [{"code": "read"}, {"code": "search-type"}],
                        "versioning": "no-version",
                        "readHistory": False,
                        "updateCreate": False,
                        "searchParam": [dict(p) for p in ENCOUNTER_SEARCH_PARAMS],
                    }
                ],
                "operation": [{"name": "process-message", "definition": PROCESS_MESSAGE}],
            }
        ],
    }
