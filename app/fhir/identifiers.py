"""Identifier systems: how an HL7 v2 assigning authority becomes a FHIR Identifier.system URI.

Rosters and FHIR senders name identifiers by URI; ADT names them by assigning authority (CX.4).
The configured map joins the two; an unmapped authority gets a stable URN so it still matches
itself across messages and can be mapped later without changing what was stored.
"""

from __future__ import annotations

from collections.abc import Mapping

UNMAPPED_PREFIX = "urn:hl7v2:aa:"


def system_for_authority(namespace: str, universal_id: str, mapping: Mapping[str, str]) -> str:
    for key in (namespace, universal_id):
        if key and key in mapping:
            return mapping[key]
    if namespace:
        return f"{UNMAPPED_PREFIX}{namespace}"
    if universal_id:
        # An ISO OID as the only authority is already a global system.
        return f"urn:oid:{universal_id}" if _looks_like_oid(universal_id) else f"{UNMAPPED_PREFIX}{universal_id}"
    return f"{UNMAPPED_PREFIX}unknown"


def _looks_like_oid(text: str) -> bool:
    parts = text.split(".")
    return len(parts) > 1 and all(p.isdigit() for p in parts)
