"""Encounter state as a pure fold over every event recorded for the visit.

Events are sorted by (event time, kind precedence, idempotency key) before folding, so the final
state depends only on the set of events, never on the order they arrived in: an A03 that overtakes
its A01, or an A08 that trails the A03, converge to the state a perfectly ordered feed produces.

Whether an arrival reopens a finished stay is decided by clinical instants, not message times: an
admit or registration reopens it only when the arrival it describes (PV1-44 / Encounter.period.start,
else its event time) is after the recorded discharge. A late-entered A01 for the stay the A03 already
ended (EVN-2 after the A03's, PV1-44 before the discharge) only fills in what the stay lacks; the stay
stays finished. The order-independence holds either way: the events are sorted before folding.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from app.encounters.notice import Diagnosis, EncounterNotice
from app.rules.facts import EncounterEventKind as K

# Within one instant: plan < arrive < move < update < leave < reversals (a cancel follows what it cancels).
_PRECEDENCE: dict[K, int] = {
    K.PREADMIT: 0,
    K.REGISTER: 1,
    K.ADMIT: 1,
    K.CLASS_CHANGE: 2,
    K.TRANSFER: 2,
    K.UPDATE: 3,
    K.CANCEL_TRANSFER: 4,
    K.DISCHARGE: 5,
    K.CANCEL_DISCHARGE: 6,
    K.CANCEL_ADMIT: 7,
}


@dataclass(frozen=True, slots=True)
class EncounterFacts:
    """The parts of one notice that shape encounter state (what `encounter_events.data` stores)."""

    kind: K
    event_time: datetime
    sort_key: str
    class_system: str | None = None
    class_code: str | None = None
    patient_class: str | None = None
    location: str | None = None
    hospital_service: str | None = None
    discharge_disposition: str | None = None
    admit_time: datetime | None = None
    discharge_time: datetime | None = None
    diagnoses: tuple[Diagnosis, ...] = ()

    @classmethod
    def from_notice(cls, notice: EncounterNotice) -> EncounterFacts:
        return cls(
            kind=notice.kind,
            event_time=notice.event_time,
            sort_key=notice.idempotency_key,
            class_system=notice.class_system,
            class_code=notice.class_code,
            patient_class=notice.patient_class,
            location=notice.location,
            hospital_service=notice.hospital_service,
            discharge_disposition=notice.discharge_disposition,
            admit_time=notice.admit_time,
            discharge_time=notice.discharge_time,
            diagnoses=notice.diagnoses,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "event_time": self.event_time.isoformat(),
            "sort_key": self.sort_key,
            "class_system": self.class_system,
            "class_code": self.class_code,
            "patient_class": self.patient_class,
            "location": self.location,
            "hospital_service": self.hospital_service,
            "discharge_disposition": self.discharge_disposition,
            "admit_time": self.admit_time.isoformat() if self.admit_time else None,
            "discharge_time": self.discharge_time.isoformat() if self.discharge_time else None,
            "diagnoses": [[d.code, d.system] for d in self.diagnoses],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EncounterFacts:
        def instant(key: str) -> datetime | None:
            return datetime.fromisoformat(data[key]) if data.get(key) else None

        return cls(
            kind=K(data["kind"]),
            event_time=datetime.fromisoformat(data["event_time"]),
            sort_key=data["sort_key"],
            class_system=data.get("class_system"),
            class_code=data.get("class_code"),
            patient_class=data.get("patient_class"),
            location=data.get("location"),
            hospital_service=data.get("hospital_service"),
            discharge_disposition=data.get("discharge_disposition"),
            admit_time=instant("admit_time"),
            discharge_time=instant("discharge_time"),
            diagnoses=tuple(Diagnosis(code, system) for code, system in data.get("diagnoses", [])),
        )


@dataclass(frozen=True, slots=True)
class EncounterState:
    status: str = "unknown"
    class_system: str | None = None
    class_code: str | None = None
    patient_class: str | None = None
    location: str | None = None
    hospital_service: str | None = None
    discharge_disposition: str | None = None
    admit_at: datetime | None = None
    discharge_at: datetime | None = None
    diagnoses: tuple[Diagnosis, ...] = ()
    last_event_at: datetime | None = None
    location_history: tuple[str, ...] = field(default=(), repr=False)


def order_key(facts: EncounterFacts) -> tuple[datetime, int, str]:
    return (facts.event_time, _PRECEDENCE.get(facts.kind, 3), facts.sort_key)


def fold(events: Iterable[EncounterFacts]) -> EncounterState:
    return fold_all(events).state


@dataclass(frozen=True, slots=True)
class Folded:
    """A folded state and the order key of the last event in it, so an event arriving in order is
    applied in one step without re-reading the history."""

    state: EncounterState
    last_key: tuple[datetime, int, str]


def fold_all(events: Iterable[EncounterFacts]) -> Folded:
    ordered = sorted(events, key=order_key)
    state = EncounterState()
    for facts in ordered:
        state = _apply(state, facts)
    return Folded(state, order_key(ordered[-1]) if ordered else (datetime.min.replace(tzinfo=UTC), 0, ""))


def fold_next(folded: Folded, history: list[EncounterFacts], new: EncounterFacts) -> Folded:
    """`fold_all([*history, new])` where `folded` is the fold of `history`: one step when `new` sorts
    after everything in it (a feed in order), else a re-fold (an event that arrived late)."""
    key = order_key(new)
    if key >= folded.last_key:
        return Folded(_apply(folded.state, new), key)
    return fold_all([*history, new])


_ARRIVALS = frozenset({K.ADMIT, K.REGISTER, K.TRANSFER})


def arrival_instant(facts: EncounterFacts) -> datetime:
    """When the arrival an event describes happened: the admit time an admit or registration carries
    (PV1-44, Encounter.period.start), else the event time (a transfer's is its own)."""
    if facts.kind in (K.ADMIT, K.REGISTER) and facts.admit_time is not None:
        return facts.admit_time
    return facts.event_time


def _describes_the_ended_stay(state: EncounterState, f: EncounterFacts) -> bool:
    """An arrival at or before the recorded discharge of a finished stay: news about that stay
    (entered late), not a new start."""
    return (
        f.kind in _ARRIVALS
        and state.status == "finished"
        and state.discharge_at is not None
        and arrival_instant(f) <= state.discharge_at
    )


def _fill_in(state: EncounterState, f: EncounterFacts) -> EncounterState:
    """What a late arrival adds to a finished stay: only what the stay does not know yet."""
    return replace(
        state,
        class_system=state.class_system if state.class_code else f.class_system,
        class_code=state.class_code or f.class_code,
        patient_class=state.patient_class or f.patient_class,
        hospital_service=state.hospital_service or f.hospital_service,
        location=state.location or f.location,
        admit_at=state.admit_at or f.admit_time,
        diagnoses=_merge_diagnoses(state.diagnoses, f.diagnoses),
        last_event_at=f.event_time,
    )


def _apply(state: EncounterState, f: EncounterFacts) -> EncounterState:
    if _describes_the_ended_stay(state, f):
        return _fill_in(state, f)
    s = replace(
        state,
        class_system=f.class_system if f.class_code else state.class_system,
        class_code=f.class_code or state.class_code,
        patient_class=f.patient_class or state.patient_class,
        hospital_service=f.hospital_service or state.hospital_service,
        admit_at=f.admit_time or state.admit_at,
        diagnoses=_merge_diagnoses(state.diagnoses, f.diagnoses),
        last_event_at=f.event_time,
    )
    if f.location and f.location != s.location and f.kind is not K.CANCEL_TRANSFER:
        s = replace(s, location=f.location, location_history=(*s.location_history, s.location or ""))

    match f.kind:
        case K.PREADMIT:
            if s.status in ("unknown", "planned"):
                s = replace(s, status="planned")
        case K.ADMIT | K.REGISTER | K.TRANSFER:
            if s.status == "finished":
                # An arrival after the discharge reopens the visit: an end it no longer has must not linger.
                s = replace(s, discharge_at=None, discharge_disposition=None)
            s = replace(s, status="in-progress")
        case K.CLASS_CHANGE | K.UPDATE:
            if s.status == "unknown":
                s = replace(s, status="finished" if f.discharge_time else "in-progress")
        case K.DISCHARGE:
            s = replace(s, status="finished")
        case K.CANCEL_ADMIT:
            s = replace(s, status="cancelled")
        case K.CANCEL_DISCHARGE:
            return replace(s, status="in-progress", discharge_at=None, discharge_disposition=None)
        case K.CANCEL_TRANSFER:
            # A12 carries the pre-transfer location in PV1-3; without it, step back one move.
            previous = f.location or (s.location_history[-1] if s.location_history else s.location)
            s = replace(s, location=previous or None, location_history=s.location_history[:-1])

    if s.status == "finished":
        s = replace(
            s,
            discharge_at=f.discharge_time or s.discharge_at or (f.event_time if f.kind is K.DISCHARGE else None),
            discharge_disposition=f.discharge_disposition or s.discharge_disposition,
        )
    return s


def _merge_diagnoses(known: tuple[Diagnosis, ...], new: tuple[Diagnosis, ...]) -> tuple[Diagnosis, ...]:
    return known + tuple(d for d in new if d not in known)
