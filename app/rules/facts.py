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
    CHANGE_ID = "change-id"  # A47: an identifier was wrong and is replaced
    OTHER = "other"  # an ADT event the service does not act on (recorded as "not acted on")


@dataclass(frozen=True, slots=True)
class OpenTask:
    """A task still being worked, as the rules need to see it: which rule raised it, for which visit,
    and from which instant its due time was counted (evidence must come after that)."""

    task_id: str
    rule_id: str
    encounter_id: str | None = None
    anchor_at: datetime | None = None
    triggering_event_ids: tuple[str, ...] = ()
    business_status: str | None = None  # a referral loop's milestone (app/tasks/referral.py)


@dataclass(frozen=True, slots=True)
class EncounterSummary:
    """Another visit of the patient, as evidence rules see it."""

    encounter_id: str
    class_code: str | None
    started_at: datetime | None
    behavioral_health: bool
    ended_at: datetime | None = None  # the discharge
    status: str | None = None  # Encounter.status now: a cancelled visit is no evidence

    @classmethod
    def of(
        cls,
        encounter_id: str,
        class_code: str | None,
        admit_at: datetime | None,
        last_event_at: datetime | None,
        behavioral_health: bool,
        discharge_at: datetime | None,
        status: str | None = None,
    ) -> EncounterSummary:
        """A visit starts at its admit/arrival time (PV1-44); without one, its latest event stands in."""
        return cls(encounter_id, class_code, admit_at or last_event_at, bool(behavioral_health), discharge_at, status)


# Encounter.status of a visit that did not happen (A11, FHIR cancelled / entered-in-error).
VOID_STATUSES = frozenset({"cancelled", "entered-in-error"})


@dataclass(frozen=True, slots=True)
class ClosedTask:
    """A task an encounter closed, as reversal rules see it: completed by that encounter (a visit as
    evidence) or superseded by it (a readmission), and the status it had before."""

    task_id: str
    rule_id: str
    status: str  # completed or cancelled
    previous_status: str  # the active status it returns to when reopened
    anchor_at: datetime | None = None
    completed_by_encounter: str | None = None
    superseded_by_encounter: str | None = None


@dataclass(frozen=True, slots=True)
class EvidenceRecord:
    """A coded clinical record that proves work was done (a medication reconciliation Procedure or
    Observation), as evidence rules see it: which record, its code, and when it was performed."""

    event_id: str
    code: str  # "system|code"
    performed_at: datetime


@dataclass(frozen=True, slots=True)
class PatientFacts:
    patient_id: str
    birth_date: date | None
    deceased: bool
    # On the current roster (issue 7 fills this from membership; adapters without one pass False).
    attributed: bool = False
    practice: str | None = None  # the attributed practice: the task's team
    # In the behavioural-health population beyond the current encounter: an earlier BH encounter or
    # diagnosis, a positive BH screen, or a BH program on the roster.
    behavioral_health: bool = False
    open_tasks: tuple[OpenTask, ...] = ()
    encounters: tuple[EncounterSummary, ...] = ()  # for evidence that arrived before the task
    evidence: tuple[EvidenceRecord, ...] = ()  # coded evidence on file (Procedure / Observation)
    # Tasks the event's encounter closed, loaded when the event voids that encounter (A11).
    closed_by_encounter: tuple[ClosedTask, ...] = ()

    def age_on(self, day: date) -> int | None:
        if self.birth_date is None:
            return None
        born = self.birth_date
        return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


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
    # The visit's class and status before this event (a new visit: None and "unknown"); a None status
    # means "not told", and the event is judged by its kind alone. An "admit" rule also fires when the
    # event took the visit into one of its classes: an ED visit converted to inpatient (A06, an A08 or
    # A02 with a new PV1-2, a Da Vinci transfer EMER -> IMP) is an admission like an A01.
    previous_class_code: str | None = None
    previous_status: str | None = None


class ScreeningStatus(StrEnum):
    ACTIVE = "active"
    RETRACTED = "retracted"  # the result was entered in error


@dataclass(frozen=True, slots=True)
class ScreeningEvent:
    """A scored screening (PHQ-9, PHQ-2, GAD-7, AUDIT-C), from an Observation or a scored
    QuestionnaireResponse; positive per the configured thresholds."""

    event_id: str
    instrument: str
    score: int | None
    positive: bool
    effective_at: datetime
    item9: int | None = None  # PHQ-9 item 9 (LOINC 44260-8): thoughts of self-harm
    status: ScreeningStatus = ScreeningStatus.ACTIVE
