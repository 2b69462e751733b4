"""What rules see: plain values, built by the adapters from decoded messages and stored state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum


class EncounterEventKind(StrEnum):
    ADMIT = "admit"
    TRANSFER = "transfer"
    DISCHARGE = "discharge"
    REGISTER = "register"
    PREADMIT = "preadmit"
    CLASS_CHANGE = "class-change"
    UPDATE = "update"
    CANCEL_ADMIT = "cancel-admit"
    CANCEL_TRANSFER = "cancel-transfer"
    CANCEL_DISCHARGE = "cancel-discharge"
    MERGE = "merge"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class PatientFacts:
    patient_id: str
    birth_date: date | None
    deceased: bool


@dataclass(frozen=True, slots=True)
class EncounterEvent:
    """One encounter event, whatever feed it came from, with the encounter state it resulted in."""

    event_id: str
    kind: EncounterEventKind
    occurred_at: datetime
    encounter_id: str
    status: str
    class_code: str | None
    admit_at: datetime | None
    discharge_at: datetime | None
    hospital_service: str | None
    behavioral_health: bool = False
