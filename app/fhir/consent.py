"""A recorded 42 CFR Part 2 consent as a FHIR R4 Consent (pure).

R4 Consent: `scope` consentscope#patient-privacy, `category` LOINC 59284-0 (Patient Consent), the policy
as `policyRule` v3-ActCode#42CFRPart2 (a Consent needs a policy or policyRule, invariant ppc-1), the
grant as `provision` (type permit, the period, and the security labels it releases: ETH substance-abuse
information and 42CFRPart2).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from app.encounters.sensitivity import ACT_CODE

CONSENT_SCOPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentscope"
LOINC = "http://loinc.org"
PATIENT_CONSENT = "59284-0"


def _instant(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def consent_resource(
    consent_id: uuid.UUID,
    patient_id: uuid.UUID,
    *,
    status: str,
    period_start: datetime,
    period_end: datetime | None,
    recorded_at: datetime,
) -> dict[str, Any]:
    period = {"start": _instant(period_start)} | ({"end": _instant(period_end)} if period_end else {})
    return {
        "resourceType": "Consent",
        "id": str(consent_id),
        "meta": {"lastUpdated": _instant(recorded_at)},
        "status": status,
        "scope": {
            "coding": [{"system": CONSENT_SCOPE_SYSTEM, "code": "patient-privacy", "display": "Privacy Consent"}]
        },
        "category": [{"coding": [{"system": LOINC, "code": PATIENT_CONSENT, "display": "Patient Consent"}]}],
        "patient": {"reference": f"Patient/{patient_id}"},
        "dateTime": _instant(recorded_at),
        "performer": [{"reference": f"Patient/{patient_id}"}],
        "policyRule": {"coding": [{"system": ACT_CODE, "code": "42CFRPart2", "display": "42 CFR Part2"}]},
        "provision": {
            "type": "permit",
            "period": period,
            "securityLabel": [
                {"system": ACT_CODE, "code": "ETH", "display": "substance abuse information sensitivity"},
                {"system": ACT_CODE, "code": "42CFRPart2", "display": "42 CFR Part2"},
            ],
        },
    }
