"""A40 with several PID/MRG groups, A47 change identifier, and the ADT events the service does not act on
(recorded "not acted on", counted per type), through the real broker and database."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import InboundEvent, Patient, PatientIdentifier, RejectedEvent
from app.metrics import sample
from app.runtime import Runtime
from app.settings import Settings
from tests.hl7_builder import adt, segment
from tests.integration.test_adt_pipeline import produce
from tests.integration.test_adt_semantics import rows, settle


def groups(trigger: str, control_id: str, *pairs: tuple[str, str]) -> bytes:
    """An A40/A47 with one {PID, MRG} group per (current MRN, prior MRN), in order."""
    head = adt(trigger, control_id=control_id, mrn=pairs[0][0], prior_mrn=pairs[0][1], include_pv1=False)
    more = [
        seg
        for mrn, prior in pairs[1:]
        for seg in (
            segment("PID", {1: "1", 3: f"{mrn}^^^GOODHEALTH^MR", 5: "DOE^JANE"}),
            segment("MRG", {1: f"{prior}^^^GOODHEALTH^MR"}),
        )
    ]
    return (head + "".join(s + "\r" for s in more)).encode()


async def owner(db: AsyncEngine, mrn: str) -> object:
    found = await rows(db, PatientIdentifier, PatientIdentifier.value == mrn)
    return found[0].patient_id if found else None


async def test_a40_with_several_groups_applies_every_merge_in_order(
    runtime: Runtime, settings: Settings, db: AsyncEngine
) -> None:
    for n, mrn in enumerate(("A", "B", "C", "D")):
        await produce(settings, adt("A03", control_id=f"V{n}", mrn=mrn, visit_number=f"V{n}").encode(), key=b"k")
    await settle(db, 4)
    # Group 1 merges B into A, group 2 merges D into C, group 3 then merges A (with B) into C.
    before = {m: await owner(db, m) for m in "ABCD"}
    await produce(settings, groups("A40", "M1", ("A", "B"), ("C", "D"), ("C", "A")), key=b"k")
    await settle(db, 5)
    survivor = before["C"]
    assert {await owner(db, m) for m in "ABCD"} == {survivor}
    pointers = {p.id: p.merged_into_id for p in await rows(db, Patient)}
    # In order: B went into A before A went into C (the chain is followed), D straight into C.
    assert pointers == {before["A"]: survivor, before["B"]: before["A"], before["C"]: None, before["D"]: survivor}
    [ledger] = await rows(db, InboundEvent, InboundEvent.message_type == "ADT^A40")
    assert ledger.status == "applied" and ledger.patient_id == survivor


async def test_a40_with_a_pid_missing_its_mrg_is_dead_lettered(
    runtime: Runtime, settings: Settings, db: AsyncEngine
) -> None:
    message = groups("A40", "M2", ("A", "B")) + b"PID|1||C^^^GOODHEALTH^MR\r"
    await produce(settings, message, key=b"k")
    await settle(db, 0, 1)
    [rejected] = await rows(db, RejectedEvent)
    assert rejected.field == "MRG" and "each PID needs its MRG" in rejected.reason


async def test_a47_replaces_the_wrong_identifier(runtime: Runtime, settings: Settings, db: AsyncEngine) -> None:
    await produce(settings, adt("A03", control_id="V1", mrn="WRONG-1").encode(), key=b"k")
    await settle(db, 1)
    patient = await owner(db, "WRONG-1")
    await produce(settings, groups("A47", "C1", ("RIGHT-1", "WRONG-1")), key=b"k")
    await settle(db, 2)
    assert await owner(db, "RIGHT-1") == patient
    assert await owner(db, "WRONG-1") is None  # the wrong MRN no longer names her (it may be someone else's)
    assert len(await rows(db, Patient)) == 1
    # Later messages under the corrected MRN reach the same patient.
    await produce(settings, adt("A08", control_id="V2", mrn="RIGHT-1").encode(), key=b"k")
    await settle(db, 3)
    [late] = await rows(db, InboundEvent, InboundEvent.message_identity == "hl7v2|GOODHEALTH|V2")
    assert late.patient_id == patient and len(await rows(db, Patient)) == 1


async def test_a47_onto_another_patients_identifier_is_refused(
    runtime: Runtime, settings: Settings, db: AsyncEngine
) -> None:
    await produce(settings, adt("A03", control_id="V1", mrn="P-1").encode(), key=b"k")
    await produce(settings, adt("A03", control_id="V2", mrn="P-2", visit_number="V2").encode(), key=b"k")
    await settle(db, 2)
    await produce(settings, groups("A47", "C2", ("P-2", "P-1")), key=b"k")
    await settle(db, 2, 1)
    [rejected] = await rows(db, RejectedEvent)
    assert rejected.field == "PID-3" and "A40" in rejected.reason
    assert await owner(db, "P-1") != await owner(db, "P-2")


NOT_ACTED_ON = ("A09", "A10", "A14", "A15", "A16", "A25", "A26", "A27", "A28", "A29", "A31", "A45")


def count(name: str, topic: str, trigger: str) -> float:
    return sample(name, topic=topic, type=f"ADT^{trigger}") or 0.0


async def test_events_not_acted_on_are_recorded_and_counted_per_type(
    runtime: Runtime, settings: Settings, db: AsyncEngine
) -> None:
    topic = settings.topics.adt
    before = {t: count("carecoord_events_not_acted_on_total", topic, t) for t in NOT_ACTED_ON}
    dup_before = count("carecoord_events_duplicate_total", topic, "A31")
    unknown_before = sample("carecoord_events_duplicate_total", topic=topic, type="unknown") or 0.0
    messages = [adt(t, control_id=f"N-{t}", mrn=f"M-{t}").encode() for t in NOT_ACTED_ON]
    await produce(settings, *messages, adt("A31", control_id="N-A31", mrn="M-A31").encode(), key=b"k")
    await settle(db, len(NOT_ACTED_ON))
    ledger = await rows(db, InboundEvent)
    assert {e.status for e in ledger} == {"not-acted-on"}
    assert sorted(e.message_type for e in ledger) == sorted(f"ADT^{t}" for t in NOT_ACTED_ON)
    assert await rows(db, Patient) == []  # nothing was changed: no patient created for tracking events
    for t in NOT_ACTED_ON:
        assert count("carecoord_events_not_acted_on_total", topic, t) == before[t] + 1, t
    # The resent A31 is a duplicate, counted under its own type, not "unknown".
    assert count("carecoord_events_duplicate_total", topic, "A31") == dup_before + 1
    assert (sample("carecoord_events_duplicate_total", topic=topic, type="unknown") or 0.0) == unknown_before


async def test_a_death_on_an_event_otherwise_not_acted_on_is_still_applied(
    runtime: Runtime, settings: Settings, db: AsyncEngine
) -> None:
    await produce(settings, adt("A31", control_id="D1", death_indicator="Y").encode(), key=b"k")
    await settle(db, 1)
    [event] = await rows(db, InboundEvent)
    assert event.status == "applied"
    [patient] = await rows(db, Patient)
    assert patient.deceased is True
