"""ADT trigger events -> encounter event kinds and the encounter status each implies (pure)."""

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
}

# FHIR R4 Encounter.status implied by each kind; None leaves the status as it is.
STATUS_AFTER: dict[EncounterEventKind, str | None] = {
    EncounterEventKind.ADMIT: "in-progress",
    EncounterEventKind.TRANSFER: "in-progress",
    EncounterEventKind.DISCHARGE: "finished",
    EncounterEventKind.REGISTER: "arrived",
    EncounterEventKind.PREADMIT: "planned",
    EncounterEventKind.CLASS_CHANGE: None,
    EncounterEventKind.UPDATE: None,
    EncounterEventKind.CANCEL_ADMIT: "cancelled",
    EncounterEventKind.CANCEL_TRANSFER: None,
    EncounterEventKind.CANCEL_DISCHARGE: "in-progress",
    EncounterEventKind.OTHER: None,
}

# v2 PV1-2 patient class -> FHIR v3 ActCode encounter class (DESIGN.md: I, E, O, P, R, B).
CLASS_CODES: dict[str, str] = {
    "I": "IMP",
    "E": "EMER",
    "O": "AMB",
    "P": "PRENC",
    "R": "AMB",
    "B": "OBSENC",
}


def kind_for_trigger(trigger: str) -> EncounterEventKind:
    return TRIGGER_KINDS.get(trigger.upper(), EncounterEventKind.OTHER)
