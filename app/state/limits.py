"""Refuse values the database could not store, at decode time and the same way on every database
(PostgreSQL enforces VARCHAR lengths, SQLite does not), naming the field the sender got wrong."""

from __future__ import annotations

from sqlalchemy import String

from app.db.models import Encounter, InboundEvent, Patient, PatientIdentifier
from app.encounters.notice import DecodeError, EncounterNotice


def _length(column: object) -> int:
    kind = column.type  # type: ignore[attr-defined]
    assert isinstance(kind, String) and kind.length, column
    return int(kind.length)


# notice attribute -> (column it is stored in, HL7 v2 field for the error message)
_CHECKS = {
    "facility": (Encounter.facility, "MSH-4"),
    "message_type": (InboundEvent.message_type, "MSH-9"),
    "visit_number": (Encounter.visit_number, "PV1-19"),
    "patient_class": (Encounter.patient_class, "PV1-2"),
    "class_system": (Encounter.class_system, "PV1-2"),
    "class_code": (Encounter.class_code, "PV1-2"),
    "location": (Encounter.location, "PV1-3"),
    "hospital_service": (Encounter.hospital_service, "PV1-10"),
    "discharge_disposition": (Encounter.discharge_disposition, "PV1-36"),
    "family_name": (Patient.family_name, "PID-5"),
    "given_name": (Patient.given_name, "PID-5"),
    "sex": (Patient.sex, "PID-8"),
}
_LIMITS = {name: (_length(column), field) for name, (column, field) in _CHECKS.items()}
_IDENTIFIER_LIMITS = (_length(PatientIdentifier.system), _length(PatientIdentifier.value))


def check_lengths(notice: EncounterNotice) -> None:
    v2 = notice.source == "hl7v2"
    for name, (limit, field) in _LIMITS.items():
        value = getattr(notice, name)
        if value is not None and len(value) > limit:
            raise DecodeError(f"{field if v2 else name} is longer than {limit} characters", field if v2 else name)
    for ident in notice.named_identifiers:
        if len(ident.system) > _IDENTIFIER_LIMITS[0] or len(ident.value) > _IDENTIFIER_LIMITS[1]:
            field = "PID-3" if v2 else "identifier"
            raise DecodeError(
                f"{field}: an identifier is longer than the {_IDENTIFIER_LIMITS[1]} characters stored", field
            )
