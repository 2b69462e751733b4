"""Stored patient -> FHIR R4 Patient (validated with fhir.resources' R4B models).

Sex is stored as the HL7 v2 table 0001 code the feeds send (M F O U A N); FHIR AdministrativeGender
has male | female | other | unknown. A record an A40 merged away answers `active: false` with a
`replaced-by` link to the survivor, as FHIR's Patient merge guidance describes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from typing import Any

from fhir.resources.R4B.patient import Patient as FhirPatient

from app.db.models import Patient, PatientIdentifier
from app.fhir.encounter import V2_0203

GENDER = {"M": "male", "F": "female", "O": "other", "A": "other", "U": "unknown", "N": "unknown"}


def patient_resource(patient: Patient, identifiers: Sequence[PatientIdentifier]) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": str(patient.id),
        "meta": {"lastUpdated": patient.updated_at.astimezone(UTC).isoformat()},
        "active": patient.merged_into_id is None,
    }
    if identifiers:
        entries = []
        for ident in sorted(identifiers, key=lambda i: (i.system, i.value)):
            entry: dict[str, Any] = {"system": ident.system, "value": ident.value}
            if ident.type_code:
                entry["type"] = {"coding": [{"system": V2_0203, "code": ident.type_code}]}
            entries.append(entry)
        resource["identifier"] = entries
    if patient.family_name or patient.given_name:
        name: dict[str, Any] = {}
        if patient.family_name:
            name["family"] = patient.family_name
        if patient.given_name:
            name["given"] = [patient.given_name]
        resource["name"] = [name]
    gender = GENDER.get((patient.sex or "").upper()[:1]) if patient.sex else None
    if gender is None and patient.sex and patient.sex.lower() in GENDER.values():
        gender = patient.sex.lower()
    if gender:
        resource["gender"] = gender
    if patient.birth_date:
        resource["birthDate"] = patient.birth_date.isoformat()
    if patient.deceased_at is not None:
        resource["deceasedDateTime"] = patient.deceased_at.astimezone(UTC).isoformat()
    elif patient.deceased:
        resource["deceasedBoolean"] = True
    if patient.merged_into_id is not None:
        resource["link"] = [{"other": {"reference": f"Patient/{patient.merged_into_id}"}, "type": "replaced-by"}]
    return resource


def validated(resource: dict[str, Any]) -> dict[str, Any]:
    FhirPatient.model_validate(resource)
    return resource
