"""A stored encounter (app/db/models.py `Encounter`) as a FHIR R4 Encounter resource (pure mapping).

Mapping decisions:

- `identifier`: the visit number (PV1-19) with system `urn:carecoord:visit:{facility}` (the sending
  facility, MSH-4, percent-encoded) and type `VN`: visit numbers are unique per facility, which is
  exactly how carecoord keys encounters; the assigning authority inside PV1-19 is not kept.
- `class`: the stored Coding (v3 ActCode, or v2-0004 for classes ActCode lacks). R4 requires a class,
  so an encounter whose feed sent none gets v3 NullFlavor `UNK`.
- `period`: admit (PV1-44) and discharge (PV1-45, or the A03 event time) instants, rendered in UTC
  with an explicit `+00:00` offset. Expected dates (PV2-8/PV2-9) are plans and are never used.
- `serviceType`: PV1-10 as text; also as a v2-0069 coding when it is one of that table's values.
- `hospitalization.dischargeDisposition`: PV1-36. carecoord reads it as a UB-04 patient discharge
  status (see CARECOORD_EXPIRED_DISPOSITIONS), so a two-digit code is a Coding in the NUBC system
  `https://www.nubc.org/CodeSystem/PatDischargeStatus`; anything else (free text, local codes) is
  CodeableConcept.text only. It is *not* put in http://terminology.hl7.org/CodeSystem/discharge-disposition,
  whose codes (home, snf, exp, ...) are a different vocabulary; no translation is attempted.
- `location`: the PV1-3 point of care / room / bed as a display-only Reference (there are no Location
  resources), with a status following the encounter's.
- `reasonCode`: the DG1 diagnoses, each a coded CodeableConcept (R4: "for admissions, this can be used
  for a coded admission diagnosis"). `Encounter.diagnosis` would need Condition resources, which carecoord
  does not have. HL7 table 0396 names are translated to FHIR system URIs where one exists; otherwise the
  code is kept without a system and the sender's coding-system name goes into the text.
- `meta.security`: the stored "system|code" labels (BH: ActCode PSY; Part 2: ETH, 42CFRPart2 and R).
- `meta.lastUpdated`: `updated_at`. No `meta.versionId`: encounters have no version counter (the row is
  rewritten by every event and also by patient merges), so any number derived today would not be a
  faithful version id; adding a version column would allow versionId, ETag and vread.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote

VISIT_SYSTEM_PREFIX = "urn:carecoord:visit:"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
V2_0069 = "http://terminology.hl7.org/CodeSystem/v2-0069"
NULL_FLAVOR = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"
NUBC_DISCHARGE_STATUS = "https://www.nubc.org/CodeSystem/PatDischargeStatus"

# HL7 table 0069 (hospital service) values; any other PV1-10 value is local and stays text only.
HOSPITAL_SERVICES = {"CAR": "Cardiac Service", "MED": "Medical Service", "PUL": "Pulmonary Service",
                     "SUR": "Surgical Service", "URO": "Urology Service"}  # fmt: skip

# HL7 table 0396 coding-system names (as sent in DG1-3.3) -> FHIR system URIs.
CODING_SYSTEMS = {
    "SCT": "http://snomed.info/sct",
    "SNOMED-CT": "http://snomed.info/sct",
    "I10": "http://hl7.org/fhir/sid/icd-10",
    "ICD10": "http://hl7.org/fhir/sid/icd-10",
    "ICD-10": "http://hl7.org/fhir/sid/icd-10",
    "I10C": "http://hl7.org/fhir/sid/icd-10-cm",
    "ICD10CM": "http://hl7.org/fhir/sid/icd-10-cm",
    "ICD-10-CM": "http://hl7.org/fhir/sid/icd-10-cm",
    "I9C": "http://hl7.org/fhir/sid/icd-9-cm",
    "ICD9CM": "http://hl7.org/fhir/sid/icd-9-cm",
    "LN": "http://loinc.org",
}

ACT_CODE_DISPLAY = {
    "IMP": "inpatient encounter",
    "EMER": "emergency",
    "AMB": "ambulatory",
    "OBSENC": "observation encounter",
    "PRENC": "pre-admission",
}

# Encounter status -> Encounter.location.status for the current location.
_LOCATION_STATUS = {"planned": "planned", "in-progress": "active", "onleave": "active", "finished": "completed"}


class EncounterRow(Protocol):
    """The columns the mapping reads (the ORM `Encounter` satisfies it)."""

    id: uuid.UUID
    patient_id: uuid.UUID
    facility: str
    visit_number: str | None
    status: str
    class_system: str | None
    class_code: str | None
    hospital_service: str | None
    location: str | None
    discharge_disposition: str | None
    admit_at: datetime | None
    discharge_at: datetime | None
    diagnoses: Sequence[Sequence[str | None]]
    security_labels: Sequence[str]
    updated_at: datetime | None


def instant(value: datetime) -> str:
    """FHIR instant/dateTime in UTC with an explicit offset, e.g. 2015-02-08T10:24:19+00:00."""
    if value.tzinfo is None:
        raise ValueError("naive datetime: stored instants are always aware")
    return value.astimezone(UTC).isoformat()


def visit_system(facility: str) -> str:
    return VISIT_SYSTEM_PREFIX + quote(facility, safe="")


def coding_system(name: str | None) -> str | None:
    if not name:
        return None
    if name.startswith(("http://", "https://", "urn:")):
        return name
    return CODING_SYSTEMS.get(name.upper())


def diagnosis_concept(code: str, system_name: str | None) -> dict[str, Any]:
    system = coding_system(system_name)
    if system:
        return {"coding": [{"system": system, "code": code}]}
    text = f"{code} ({system_name})" if system_name else code
    return {"coding": [{"code": code}], "text": text}


def discharge_disposition(value: str) -> dict[str, Any]:
    if len(value) == 2 and value.isdigit():
        return {"coding": [{"system": NUBC_DISCHARGE_STATUS, "code": value}]}
    return {"text": value}


def service_type(value: str) -> dict[str, Any]:
    display = HOSPITAL_SERVICES.get(value.upper())
    if display:
        return {"coding": [{"system": V2_0069, "code": value.upper(), "display": display}], "text": value}
    return {"text": value}


def security_labels(labels: Sequence[str]) -> list[dict[str, str]]:
    out = []
    for label in labels:
        system, sep, code = label.rpartition("|")
        out.append({"system": system, "code": code} if sep and system else {"code": code})
    return out


def encounter_class(system: str | None, code: str | None) -> dict[str, str]:
    if not code:
        return {"system": NULL_FLAVOR, "code": "UNK", "display": "unknown"}
    coding = {"system": system, "code": code} if system else {"code": code}
    display = ACT_CODE_DISPLAY.get(code) if system and system.endswith("v3-ActCode") else None
    if display:
        coding["display"] = display
    return coding


def encounter_resource(row: EncounterRow) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Encounter", "id": str(row.id)}
    meta: dict[str, Any] = {}
    if row.updated_at is not None:
        meta["lastUpdated"] = instant(row.updated_at)
    if row.security_labels:
        meta["security"] = security_labels(row.security_labels)
    if meta:
        resource["meta"] = meta
    if row.visit_number:
        resource["identifier"] = [
            {
                "use": "usual",
                "type": {"coding": [{"system": V2_0203, "code": "VN", "display": "Visit number"}]},
                "system": visit_system(row.facility),
                "value": row.visit_number,
            }
        ]
    resource["status"] = row.status
    resource["class"] = encounter_class(row.class_system, row.class_code)
    if row.hospital_service:
        resource["serviceType"] = service_type(row.hospital_service)
    resource["subject"] = {"reference": f"Patient/{row.patient_id}"}
    period = {}
    if row.admit_at is not None:
        period["start"] = instant(row.admit_at)
    if row.discharge_at is not None:
        period["end"] = instant(row.discharge_at)
    if period:
        resource["period"] = period
    reasons = [
        diagnosis_concept(str(dx[0]), dx[1] if len(dx) > 1 else None) for dx in row.diagnoses or () if dx and dx[0]
    ]
    if reasons:
        resource["reasonCode"] = reasons
    if row.discharge_disposition:
        resource["hospitalization"] = {"dischargeDisposition": discharge_disposition(row.discharge_disposition)}
    if row.location:
        location: dict[str, Any] = {"location": {"display": row.location.replace("^", ", ")}}
        status = _LOCATION_STATUS.get(row.status)
        if status:
            location["status"] = status
        resource["location"] = [location]
    return resource
