"""ADT trigger events -> encounter event kinds, and v2 patient class -> FHIR encounter class (pure)."""

from __future__ import annotations

from app.rules.facts import EncounterEventKind

TRIGGER_KINDS: dict[str, EncounterEventKind] = {
    "A01": EncounterEventKind.ADMIT,
    "A02": EncounterEventKind.TRANSFER,
    "A03": EncounterEventKind.DISCHARGE,
    "A04": EncounterEventKind.REGISTER,
    "A05": EncounterEventKind.PREADMIT,
    "A06": EncounterEventKind.CLASS_CHANGE,
    "A07": EncounterEventKind.CLASS_CHANGE,
    "A08": EncounterEventKind.UPDATE,
    "A11": EncounterEventKind.CANCEL_ADMIT,
    "A12": EncounterEventKind.CANCEL_TRANSFER,
    "A13": EncounterEventKind.CANCEL_DISCHARGE,
    "A40": EncounterEventKind.MERGE,
    "A47": EncounterEventKind.CHANGE_ID,
}

# Triggers whose message is PID/MRG groups (A40: {PID, [PD1], MRG, [PV1]}; A47: PID, [PD1], MRG, and the
# same repeated by feeds that batch corrections), applied group by group in message order.
IDENTIFIER_TRIGGERS = frozenset(
    t for t, k in TRIGGER_KINDS.items() if k in (EncounterEventKind.MERGE, EncounterEventKind.CHANGE_ID)
)

# Triggers that describe a visit, and so must carry PV1.
VISIT_TRIGGERS = frozenset(TRIGGER_KINDS) - IDENTIFIER_TRIGGERS

# Every other trigger (A09/A10 tracking, A14-A16 and A25-A27 pending events, A28/A29/A31 person
# maintenance, A45 move visit, ...) decodes to OTHER: recorded "not acted on" and counted per type.

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
V2_0004 = "http://terminology.hl7.org/CodeSystem/v2-0004"

# HL7 v2-to-FHIR ConceptMap table-hl70004-to-v3-actcode: E, I, O, P map to ActCode; the other
# patient classes (B obstetrics, R recurring, ...) have no ActCode and keep their v2-0004 code.
_ACT_CODE_FOR_CLASS = {"E": "EMER", "I": "IMP", "O": "AMB", "P": "PRENC"}


def encounter_class(
    patient_class: str | None, patient_type: str | None, observation_types: frozenset[str]
) -> tuple[str, str] | None:
    """(system, code) of FHIR Encounter.class. Observation stays are not a v2 patient class; feeds
    mark them in PV1-18 patient type, which the configured `observation_types` recognise."""
    if patient_type and patient_type.upper() in observation_types:
        return ACT_CODE, "OBSENC"
    if not patient_class:
        return None
    code = _ACT_CODE_FOR_CLASS.get(patient_class)
    return (ACT_CODE, code) if code else (V2_0004, patient_class)


def kind_for_trigger(trigger: str) -> EncounterEventKind:
    return TRIGGER_KINDS.get(trigger.upper(), EncounterEventKind.OTHER)
