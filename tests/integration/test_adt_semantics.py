"""ADT semantics end to end (real broker, real database): order, reversals, death, merge, labels."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import Encounter, InboundEvent, Patient, PatientIdentifier, RejectedEvent, Task, TaskHistory
from app.runtime import Runtime
from app.settings import Settings
from tests.conftest import eventually
from tests.hl7_builder import adt
from tests.integration.test_adt_pipeline import produce


async def settle(db: AsyncEngine, applied: int, rejected: int = 0) -> None:
    async def done() -> bool:
        async with db.connect() as conn:
            a = await conn.scalar(select(func.count()).select_from(InboundEvent))
            r = await conn.scalar(select(func.count()).select_from(RejectedEvent))
        return (a, r) == (applied, rejected)

    assert await eventually(done), f"expected {applied} applied and {rejected} rejected"


async def rows(db: AsyncEngine, model: type, *where: object) -> list:
    async with db.connect() as conn:
        return list((await conn.execute(select(model).where(*where))).all())


A01 = dict(control_id="A01", event_time="20261115083000-0500")
A02 = dict(control_id="A02", event_time="20261116090000-0500", location="5E^510^B^GOODHEALTH")
A08 = dict(control_id="A08", event_time="20261121100000-0500", hospital_service="CAR", location="5E^510^B^GOODHEALTH")
A03 = dict(control_id="A03", event_time="20261120142500-0500")


async def test_out_of_order_arrival_converges(runtime: Runtime, settings: Settings, db: AsyncEngine) -> None:
    # The discharge overtakes the admit and the transfer; an update trails the discharge.
    await produce(
        settings,
        adt("A03", **A03, location="5E^510^B^GOODHEALTH").encode(),
        adt("A08", **A08).encode(),
        adt("A02", **A02).encode(),
        adt("A01", **A01).encode(),
        key=b"p1",
    )
    await settle(db, 4)
    [enc] = await rows(db, Encounter)
    assert enc.status == "finished"
    assert enc.location == "5E^510^B"
    assert enc.hospital_service == "CAR"  # the later update wins
    assert enc.admit_at == datetime(2026, 11, 15, 13, 30, tzinfo=UTC)
    assert enc.discharge_at == datetime(2026, 11, 20, 19, 0, tzinfo=UTC)
    assert [t.type for t in await rows(db, Task)] == ["post-discharge-contact"]


async def test_cancel_discharge_cancels_the_task_and_a_new_discharge_raises_a_new_one(
    runtime: Runtime, settings: Settings, db: AsyncEngine
) -> None:
    await produce(settings, adt("A01", **A01).encode(), adt("A03", **A03).encode(), key=b"p1")
    await settle(db, 2)
    await produce(settings, adt("A13", control_id="A13", event_time="20261120150000-0500").encode(), key=b"p1")
    await settle(db, 3)
    [task] = await rows(db, Task)
    assert task.status == "cancelled"
    [enc] = await rows(db, Encounter)
    assert enc.status == "in-progress" and enc.discharge_at is None
    [history] = await rows(db, TaskHistory, TaskHistory.action == "cancelled")
    assert history.detail["reason"] == "encounter is now in-progress (cancel-discharge)"

    await produce(
        settings,
        adt("A03", control_id="A03-2", event_time="20261121120000-0500", discharge_time="20261121113000-0500").encode(),
        key=b"p1",
    )
    await settle(db, 4)
    tasks = {t.status: t for t in await rows(db, Task)}
    assert set(tasks) == {"cancelled", "ready"}
    assert tasks["ready"].due_at == datetime(2026, 11, 28, 16, 30, tzinfo=UTC)


async def test_cancel_admit(runtime: Runtime, settings: Settings, db: AsyncEngine) -> None:
    await produce(settings, adt("A01", **A01).encode(), adt("A11", control_id="A11").encode(), key=b"p1")
    await settle(db, 2)
    [enc] = await rows(db, Encounter)
    assert enc.status == "cancelled"


async def test_cancel_transfer_restores_location(runtime: Runtime, settings: Settings, db: AsyncEngine) -> None:
    await produce(
        settings,
        adt("A01", **A01).encode(),
        adt("A02", **A02).encode(),
        adt("A12", control_id="A12", event_time="20261116100000-0500", location="4W^401^A^GOODHEALTH").encode(),
        key=b"p1",
    )
    await settle(db, 3)
    [enc] = await rows(db, Encounter)
    assert enc.location == "4W^401^A" and enc.status == "in-progress"


async def test_death_by_expired_disposition_cancels_open_tasks(
    runtime: Runtime, settings: Settings, db: AsyncEngine
) -> None:
    await produce(settings, adt("A03", **A03).encode(), key=b"p1")
    await settle(db, 1)
    assert [t.status for t in await rows(db, Task)] == ["ready"]
    # A corrected discharge says the patient expired (PV1-36 = 20): no contact task should remain.
    await produce(
        settings,
        adt(
            "A08",
            control_id="A08-X",
            event_time="20261120160000-0500",
            discharge_disposition="20",
            discharge_time="20261120140000-0500",
        ).encode(),
        key=b"p1",
    )
    await settle(db, 2)
    [patient] = await rows(db, Patient)
    assert patient.deceased is True
    assert patient.deceased_at == datetime(2026, 11, 20, 19, 0, tzinfo=UTC)
    assert [t.status for t in await rows(db, Task)] == ["cancelled"]
    [history] = await rows(db, TaskHistory, TaskHistory.action == "cancelled")
    assert history.detail["reason"] == "patient deceased"


async def test_merge_moves_encounters_and_tasks_to_the_survivor(
    runtime: Runtime, settings: Settings, db: AsyncEngine
) -> None:
    await produce(settings, adt("A03", **A03, mrn="OLD-1").encode(), key=b"old")
    await produce(settings, adt("A01", control_id="NEW-A01", mrn="NEW-1", visit_number="V0002").encode(), key=b"new")
    await settle(db, 2)
    await produce(
        settings, adt("A40", control_id="A40", mrn="NEW-1", prior_mrn="OLD-1", include_pv1=False).encode(), key=b"new"
    )
    await settle(db, 3)
    survivor_id = (await rows(db, PatientIdentifier, PatientIdentifier.value == "NEW-1"))[0].patient_id
    assert {r.patient_id for r in await rows(db, PatientIdentifier)} == {survivor_id}
    assert {e.patient_id for e in await rows(db, Encounter)} == {survivor_id}
    [task] = await rows(db, Task)
    assert task.patient_id == survivor_id and task.status == "ready"
    merged = [p for p in await rows(db, Patient) if p.id != survivor_id]
    assert [p.merged_into_id for p in merged] == [survivor_id]

    # A late message under the old MRN lands on the survivor, not a resurrected record.
    await produce(
        settings, adt("A08", control_id="LATE", mrn="OLD-1", event_time="20261122100000-0500").encode(), key=b"old"
    )
    await settle(db, 4)
    [late] = await rows(db, InboundEvent, InboundEvent.message_identity == "hl7v2|GOODHEALTH|LATE")
    assert late.patient_id == survivor_id
    assert len(await rows(db, Patient)) == 2


async def test_behavioral_health_and_part2_labels(runtime: Runtime, settings: Settings, db: AsyncEngine) -> None:
    await produce(
        settings,
        adt("A03", control_id="BH", visit_number="V-BH", diagnoses=(("F32.9", "I10"),)).encode(),
        adt("A03", control_id="SUD", mrn="MRN-2", visit_number="V-SUD", diagnoses=(("F10.20", "I10"),)).encode(),
        adt("A03", control_id="PSY", mrn="MRN-3", visit_number="V-PSY", hospital_service="PSY").encode(),
        adt("A03", control_id="MED", mrn="MRN-4", visit_number="V-MED", diagnoses=(("I50.9", "I10"),)).encode(),
        adt("A03", control_id="SCT", mrn="MRN-5", visit_number="V-SCT", diagnoses=(("F10", "SCT"),)).encode(),
        adt("A01", control_id="SUDU", mrn="MRN-6", visit_number="V-SUD-UNIT", hospital_service="SUD").encode(),
        key=b"k",
    )
    await settle(db, 6)
    by_visit = {e.visit_number: e for e in await rows(db, Encounter)}
    assert (by_visit["V-BH"].behavioral_health, by_visit["V-BH"].part2) == (True, False)
    # Admitted to a substance-use service: Part 2 from the first message, before any DG1.
    assert (by_visit["V-SUD-UNIT"].behavioral_health, by_visit["V-SUD-UNIT"].part2) == (True, True)
    assert by_visit["V-BH"].security_labels == ["http://terminology.hl7.org/CodeSystem/v3-ActCode|PSY"]
    assert (by_visit["V-SUD"].behavioral_health, by_visit["V-SUD"].part2) == (True, True)
    assert "http://terminology.hl7.org/CodeSystem/v3-ActCode|42CFRPart2" in by_visit["V-SUD"].security_labels
    assert by_visit["V-PSY"].behavioral_health is True
    assert (by_visit["V-MED"].behavioral_health, by_visit["V-MED"].part2) == (False, False)
    # "F10" in a non-ICD-10 coding system is not an ICD-10 code.
    assert by_visit["V-SCT"].part2 is False


async def test_observation_and_emergency_classes(runtime: Runtime, settings: Settings, db: AsyncEngine) -> None:
    await produce(
        settings,
        adt("A03", control_id="OBS", visit_number="V-OBS", patient_class="O", patient_type="OBS").encode(),
        adt("A03", control_id="ED", mrn="MRN-2", visit_number="V-ED", patient_class="E").encode(),
        adt("A03", control_id="REC", mrn="MRN-3", visit_number="V-R", patient_class="R").encode(),
        key=b"k",
    )
    await settle(db, 3)
    by_visit = {e.visit_number: e for e in await rows(db, Encounter)}
    assert by_visit["V-OBS"].class_code == "OBSENC"
    assert by_visit["V-ED"].class_code == "EMER"
    assert (by_visit["V-R"].class_system, by_visit["V-R"].class_code) == (
        "http://terminology.hl7.org/CodeSystem/v2-0004",
        "R",
    )
    tasks = await rows(db, Task)
    assert [t.encounter_id for t in tasks] == [by_visit["V-OBS"].id]


async def test_visit_without_number_falls_back_to_patient_and_admit_time(
    runtime: Runtime, settings: Settings, db: AsyncEngine
) -> None:
    await produce(
        settings, adt("A01", **A01, visit_number="").encode(), adt("A03", **A03, visit_number="").encode(), key=b"p"
    )
    await settle(db, 2)
    [enc] = await rows(db, Encounter)
    assert enc.status == "finished" and enc.visit_number is None


async def test_structural_and_date_errors_are_dead_lettered(
    runtime: Runtime, settings: Settings, db: AsyncEngine
) -> None:
    await produce(
        settings,
        adt("A03", control_id="NOPV1", include_pv1=False).encode(),
        adt("A03", control_id="BACKWARDS", admit_time="20261121000000-0500").encode(),
        adt("A03", control_id="UNBORN", birth_date="20991231").encode(),
        adt("A40", control_id="NOMRG", include_pv1=False).encode(),
        # PostgreSQL would refuse a 9-character patient class and SQLite would store it: refused alike.
        adt("A03", control_id="LONGCLASS", patient_class="INPATIENT").encode(),
        b"MSH|^~\\&|" + b"X" * (settings.ingest_max_bytes + 1),
        adt("A03").encode(),
        key=b"k",
    )
    await settle(db, 1, 6)
    fields = sorted(r.field for r in await rows(db, RejectedEvent))
    assert fields == ["MRG", "PID-7", "PV1", "PV1-2", "PV1-45", "size"]
