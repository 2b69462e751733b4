"""Encounter state is a fold over events: arrival order must never change the result."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from app.encounters.notice import Diagnosis
from app.encounters.state import EncounterFacts, fold, fold_all, fold_next
from app.rules.facts import EncounterEventKind as K

T0 = datetime(2026, 11, 15, 13, 30, tzinfo=UTC)


def facts(kind: K, hours: float, key: str, **kw: object) -> EncounterFacts:
    return EncounterFacts(kind=kind, event_time=T0 + timedelta(hours=hours), sort_key=key, **kw)  # type: ignore[arg-type]


ADMIT = facts(K.ADMIT, 0, "a", class_code="IMP", location="4W^401^A", admit_time=T0)
TRANSFER = facts(K.TRANSFER, 24, "t", location="5E^510^B")
UPDATE = facts(K.UPDATE, 30, "u", hospital_service="MED", diagnoses=(Diagnosis("I50.9", "I10"),))
DISCHARGE = facts(K.DISCHARGE, 96, "d", discharge_time=T0 + timedelta(hours=95), discharge_disposition="01")
LATE_UPDATE = facts(K.UPDATE, 100, "u2", diagnoses=(Diagnosis("F32.9", "I10"),))
# Entered after the A03 (EVN-2 later) but admitting the patient before the recorded discharge (PV1-44).
LATE_ADMIT = facts(K.ADMIT, 110, "a-late", class_code="IMP", location="4W^401^A", admit_time=T0)
DISCHARGED_AT = T0 + timedelta(hours=95)


def test_normal_stay() -> None:
    state = fold([ADMIT, TRANSFER, UPDATE, DISCHARGE])
    assert state.status == "finished"
    assert state.location == "5E^510^B"
    assert state.discharge_at == T0 + timedelta(hours=95)
    assert state.discharge_disposition == "01"
    assert state.admit_at == T0 and state.class_code == "IMP"


def test_discharge_before_admit_and_update_after_discharge_converge() -> None:
    expected = fold([ADMIT, TRANSFER, UPDATE, DISCHARGE, LATE_UPDATE])
    assert fold([DISCHARGE, LATE_UPDATE, ADMIT, UPDATE, TRANSFER]) == expected
    assert expected.status == "finished"
    assert [d.code for d in expected.diagnoses] == ["I50.9", "F32.9"]


@given(
    st.permutations(
        [
            ADMIT,
            TRANSFER,
            UPDATE,
            DISCHARGE,
            LATE_UPDATE,
            LATE_ADMIT,
            facts(K.CANCEL_DISCHARGE, 97, "c"),
            facts(K.DISCHARGE, 120, "d2"),
        ]
    )
)
def test_any_arrival_order_gives_the_same_state(events: list[EncounterFacts]) -> None:
    assert fold(events) == fold(sorted(events, key=lambda f: f.event_time))


def test_cancel_discharge_reopens_and_clears_discharge() -> None:
    state = fold([ADMIT, DISCHARGE, facts(K.CANCEL_DISCHARGE, 97, "c")])
    assert state.status == "in-progress"
    assert state.discharge_at is None and state.discharge_disposition is None


def test_cancel_admit() -> None:
    assert fold([ADMIT, facts(K.CANCEL_ADMIT, 1, "x")]).status == "cancelled"


def test_cancel_transfer_restores_the_prior_location() -> None:
    # A12 carries the pre-transfer location in PV1-3 ...
    assert fold([ADMIT, TRANSFER, facts(K.CANCEL_TRANSFER, 25, "x", location="4W^401^A")]).location == "4W^401^A"
    # ... and without one, the fold steps back one move.
    assert fold([ADMIT, TRANSFER, facts(K.CANCEL_TRANSFER, 25, "x")]).location == "4W^401^A"


def test_same_instant_cancel_follows_what_it_cancels() -> None:
    same_time = facts(K.CANCEL_DISCHARGE, 96, "a-first-by-key")
    assert fold([ADMIT, same_time, DISCHARGE]).status == "in-progress"


def test_admit_after_discharge_reopens_without_a_stale_end() -> None:
    # Seen in the GHH samples: an A01 whose EVN-2 is years after the A03 for the same visit.
    state = fold([DISCHARGE, facts(K.ADMIT, 24 * 365, "late-admit")])
    assert state.status == "in-progress"
    assert state.discharge_at is None and state.discharge_disposition is None


def test_preadmit_does_not_undo_an_admission() -> None:
    assert fold([ADMIT, facts(K.PREADMIT, 2, "p")]).status == "in-progress"
    assert fold([facts(K.PREADMIT, -24, "p")]).status == "planned"


def test_a_late_entered_admit_does_not_reopen_the_finished_stay() -> None:
    expected = fold([ADMIT, TRANSFER, UPDATE, DISCHARGE])
    state = fold([ADMIT, TRANSFER, UPDATE, DISCHARGE, LATE_ADMIT])
    assert state.status == "finished"
    assert state.discharge_at == DISCHARGED_AT and state.discharge_disposition == "01"
    assert state.location == "5E^510^B"  # the discharge's, not the admit bed the late A01 names
    assert state.last_event_at == LATE_ADMIT.event_time
    assert replace(state, last_event_at=expected.last_event_at) == expected
    # Alone with its discharge, the late admit fills in what the discharge did not say.
    alone = fold([DISCHARGE, LATE_ADMIT])
    assert alone.status == "finished" and alone.class_code == "IMP" and alone.admit_at == T0


def test_an_arrival_after_the_discharge_still_reopens() -> None:
    readmit = facts(K.ADMIT, 110, "a-new", class_code="IMP", admit_time=DISCHARGED_AT + timedelta(hours=2))
    transfer = facts(K.TRANSFER, 110, "t-new", location="6N^601^A")
    for event in (readmit, transfer):
        state = fold([ADMIT, DISCHARGE, event])
        assert state.status == "in-progress" and state.discharge_at is None, event.sort_key


def test_an_admit_at_the_discharge_instant_is_the_ended_stay() -> None:
    at_discharge = facts(K.REGISTER, 110, "r", admit_time=DISCHARGED_AT)
    assert fold([DISCHARGE, at_discharge]).status == "finished"


@given(
    admit_hours=st.floats(min_value=-48, max_value=200, allow_nan=False),
    entered_hours=st.floats(min_value=96.5, max_value=300, allow_nan=False),
    kind=st.sampled_from([K.ADMIT, K.REGISTER]),
    order=st.permutations(range(6)),
)
def test_a_late_arrival_reopens_exactly_when_it_follows_the_discharge(
    admit_hours: float, entered_hours: float, kind: K, order: list[int]
) -> None:
    """Order-independent, and decided by the clinical instants: PV1-44 against the discharge."""
    late = facts(kind, entered_hours, "late", class_code="IMP", admit_time=T0 + timedelta(hours=admit_hours))
    events = [ADMIT, TRANSFER, UPDATE, DISCHARGE, LATE_UPDATE, late]
    arrived = [events[i] for i in order]
    state = fold(arrived)
    assert state == fold(events)
    reopened = late.admit_time is not None and late.admit_time > DISCHARGED_AT
    assert state.status == ("in-progress" if reopened else "finished")
    assert state.discharge_at == (None if reopened else DISCHARGED_AT)
    folded = fold_all(arrived[:1])
    for i in range(1, len(arrived)):
        folded = fold_next(folded, arrived[:i], arrived[i])
    assert folded == fold_all(events)


@given(
    st.permutations([ADMIT, TRANSFER, UPDATE, DISCHARGE, LATE_UPDATE, LATE_ADMIT, facts(K.CANCEL_DISCHARGE, 97, "c")])
)
def test_incremental_fold_equals_full_fold(events: list[EncounterFacts]) -> None:
    folded = fold_all(events[:1])
    for i in range(1, len(events)):
        folded = fold_next(folded, events[:i], events[i])
        assert folded == fold_all(events[: i + 1])
    assert folded.state == fold(events)
