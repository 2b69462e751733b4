"""The set-based batch path must leave the database exactly as the per-message path does.

The per-message path (`NoticeHandler.handle`) is the reference; `handle_batch` goes set-based when it
can (app/consumers/batch_apply.py). Both run the same input into a clean database and the resulting
patients, encounters, tasks and ledger are compared field by field (ids aside, which are random).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.consumers.batch_apply import BatchApplier
from app.db.models import Base, Encounter, InboundEvent, Patient, PatientIdentifier, Task, TaskHistory
from app.runtime import Runtime
from app.settings import DEFAULT_RULES_FILE, Settings
from app.state.inbound import Position
from tests.fhir_builder import encode, med_rec_observation, med_rec_procedure
from tests.hl7_builder import adt

_spec = importlib.util.spec_from_file_location("bench_ingest", Path(__file__).resolve().parents[2] / "bench/ingest.py")
assert _spec and _spec.loader
bench_ingest = importlib.util.module_from_spec(_spec)
sys.modules["bench_ingest"] = bench_ingest  # dataclasses resolve their module by name
_spec.loader.exec_module(bench_ingest)


def scenario_messages() -> list[bytes]:
    """Reversals, out-of-order, duplicates and labels, all within single batches."""
    v = dict(mrn="S1", visit_number="VS1")
    return [
        adt("A03", control_id="S1-A03", event_time="20261120142500-0500", **v).encode(),
        adt("A01", control_id="S1-A01", event_time="20261115083000-0500", **v).encode(),
        adt("A13", control_id="S1-A13", event_time="20261120150000-0500", **v).encode(),
        adt(
            "A03", control_id="S1-A03b", event_time="20261121120000-0500", discharge_time="20261121113000-0500", **v
        ).encode(),
        adt("A03", control_id="S1-A03b", event_time="20261121120000-0500", **v).encode(),  # duplicate
        adt("A03", control_id="S2", mrn="S2", visit_number="VS2", diagnoses=(("F10.20", "I10"),)).encode(),
        adt("A03", control_id="S3", mrn="S3", visit_number="VS3", patient_class="E").encode(),
        adt("A11", control_id="S4-A11", mrn="S4", visit_number="VS4").encode(),
        adt("A08", control_id="S5", mrn="S1", visit_number="VS5", family="RENAMED").encode(),
        # Evidence and supersession across encounters of one patient (shipped rules).
        adt("A03", control_id="S6-A03", mrn="S6", visit_number="VS6", discharge_time="20261116100000-0500").encode(),
        adt(
            "A04",
            control_id="S6-A04",
            mrn="S6",
            visit_number="VS6b",
            patient_class="O",
            event_time="20261118090000-0500",
            admit_time="20261118090000-0500",
        ).encode(),
        adt("A03", control_id="S7-A03", mrn="S7", visit_number="VS7", discharge_time="20261116100000-0500").encode(),
        adt(
            "A01",
            control_id="S7-A01",
            mrn="S7",
            visit_number="VS7b",
            event_time="20261119090000-0500",
            admit_time="20261119090000-0500",
        ).encode(),
        adt("A03", control_id="S8", mrn="S8", visit_number="VS8", hospital_service="PSY").encode(),
        # The follow-up visit's A04 arrives before the discharge it follows: the task is born completed.
        adt(
            "A04",
            control_id="S9-A04",
            mrn="S9",
            visit_number="VS9b",
            patient_class="O",
            event_time="20261118090000-0500",
            admit_time="20261118090000-0500",
        ).encode(),
        adt("A03", control_id="S9-A03", mrn="S9", visit_number="VS9", discharge_time="20261116100000-0500").encode(),
        # Medication reconciliation evidence already on file (evidence_messages): S10's completes the new
        # task; S11's predates the discharge and does not.
        adt("A03", control_id="S10", mrn="S10", visit_number="VS10", discharge_time="20261116100000-0500").encode(),
        adt("A03", control_id="S11", mrn="S11", visit_number="VS11", discharge_time="20261116100000-0500").encode(),
        # Reversals: S12's follow-up visit is cancelled (the contact reopens); S13's readmission is
        # cancelled (the superseded work reopens); S14's visit was cancelled before the discharge came.
        adt("A03", control_id="S12", mrn="S12", visit_number="VS12", discharge_time="20261116100000-0500").encode(),
        adt("A04", control_id="S12-A04", mrn="S12", visit_number="VS12b", **_OFFICE).encode(),
        adt("A11", control_id="S12-A11", mrn="S12", visit_number="VS12b", patient_class="O").encode(),
        adt("A03", control_id="S13", mrn="S13", visit_number="VS13", discharge_time="20261116100000-0500").encode(),
        adt("A01", control_id="S13-A01", mrn="S13", visit_number="VS13b", **_READMIT).encode(),
        adt("A11", control_id="S13-A11", mrn="S13", visit_number="VS13b", event_time="20261119100000-0500").encode(),
        adt("A04", control_id="S14-A04", mrn="S14", visit_number="VS14b", **_OFFICE).encode(),
        adt("A11", control_id="S14-A11", mrn="S14", visit_number="VS14b", patient_class="O").encode(),
        adt("A03", control_id="S14", mrn="S14", visit_number="VS14", discharge_time="20261116100000-0500").encode(),
    ]


_OFFICE = dict(patient_class="O", event_time="20261118090000-0500", admit_time="20261118090000-0500")
_READMIT = dict(event_time="20261119090000-0500", admit_time="20261119090000-0500")


def evidence_messages() -> list[bytes]:
    """FHIR evidence applied before the ADT on both paths (the ADT feed's unmapped MRN system)."""
    mrn = {"identifier": {"system": "urn:hl7v2:aa:GOODHEALTH", "value": "S10"}}
    return [
        encode(med_rec_procedure(ident="S10-P", performed="2026-11-17T09:00:00-05:00") | {"subject": mrn}),
        encode(
            med_rec_observation(ident="S11-O", effective="2026-11-01T09:00:00-05:00")
            | {"subject": mrn | {"identifier": {"system": "urn:hl7v2:aa:GOODHEALTH", "value": "S11"}}}
        ),
    ]


async def snapshot(db: AsyncEngine) -> dict[str, Any]:
    async with db.connect() as conn:
        idents: dict[Any, set[tuple[str, str]]] = {}
        for r in (await conn.execute(select(PatientIdentifier))).all():
            idents.setdefault(r.patient_id, set()).add((r.system, r.value))
        who = {pid: tuple(sorted(s)) for pid, s in idents.items()}
        patients = sorted(
            (who[p.id], p.family_name, p.given_name, p.birth_date, p.sex, p.deceased)
            for p in (await conn.execute(select(Patient))).all()
        )
        encounters = {e.id: e for e in (await conn.execute(select(Encounter))).all()}
        enc_rows = sorted(
            (
                who[e.patient_id],
                e.facility,
                e.visit_number,
                e.status,
                e.class_system,
                e.class_code,
                e.location,
                e.hospital_service,
                e.discharge_disposition,
                e.admit_at,
                e.discharge_at,
                str(e.diagnoses),
                e.behavioral_health,
                e.part2,
                str(e.security_labels),
                e.last_event_at,
            )
            for e in encounters.values()
        )
        tasks = sorted(
            (
                encounters[t.encounter_id].visit_number,
                t.type,
                t.status,
                t.role,
                t.priority,
                t.due_at,
                t.rule_id,
                t.rule_version,
                str(t.due_basis),
                str(t.route_basis),
                t.team,
                encounters[t.superseded_by_encounter_id].visit_number if t.superseded_by_encounter_id else None,
                encounters[t.completed_by_encounter_id].visit_number if t.completed_by_encounter_id else None,
                t.business_status,
                t.version,
                t.dedupe_key.split("|cancelled|")[0].split("|")[0],
            )
            for t in (await conn.execute(select(Task))).all()
        )
        history = sorted(
            (h.action, h.from_status, h.to_status, h.actor, str(sorted(h.detail)))
            for h in (await conn.execute(select(TaskHistory))).all()
        )
        ledger = sorted(
            (i.idempotency_key, i.status, i.message_type, i.offset, i.event_time)
            for i in (await conn.execute(select(InboundEvent))).all()
        )
    return {"patients": patients, "encounters": enc_rows, "tasks": tasks, "history": history, "ledger": ledger}


async def clear(db: AsyncEngine) -> None:
    async with db.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            await conn.execute(table.delete())


@pytest.mark.parametrize("batch_size", [7, 60])
async def test_set_based_batches_equal_the_per_message_reference(
    settings: Settings, db: AsyncEngine, monkeypatch: pytest.MonkeyPatch, batch_size: int
) -> None:
    # The shipped rule set: every kind of effect (create, complete, cancel, supersede) on both paths.
    full_rules = settings.model_copy(update={"rules_file": DEFAULT_RULES_FILE})
    async with Runtime(full_rules, run_consumers=False) as runtime:
        await _compare(runtime, db, monkeypatch, batch_size)


async def _compare(runtime: Runtime, db: AsyncEngine, monkeypatch: pytest.MonkeyPatch, batch_size: int) -> None:
    handler = runtime.adt_handler
    assert handler is not None
    payloads = [m.payload for m in bench_ingest.corpus(240)] + scenario_messages()
    records = [(p, Position("adt", 0, i)) for i, p in enumerate(payloads)]

    fhir = runtime.fhir_handler
    assert fhir is not None
    evidence = [(p, Position("fhir", 0, i)) for i, p in enumerate(evidence_messages())]
    for payload, position in evidence:
        await fhir.handle(payload, position)
    for payload, position in records:
        await handler.handle(payload, position)
    reference = await snapshot(db)
    await clear(db)

    set_based = 0
    real_apply = BatchApplier.apply

    async def counting_apply(self, session, notices):  # type: ignore[no-untyped-def]
        nonlocal set_based
        result = await real_apply(self, session, notices)
        set_based += result is not None
        return result

    monkeypatch.setattr(BatchApplier, "apply", counting_apply)
    for payload, position in evidence:
        await fhir.handle(payload, position)
    for start in range(0, len(records), batch_size):
        assert await handler.handle_batch(records[start : start + batch_size]) is not None
    batched = await snapshot(db)

    assert set_based >= len(records) // batch_size - 1, "the set-based path must actually have run"
    for part in reference:
        assert batched[part] == reference[part], part
    med_rec = {t[0]: t[2] for t in reference["tasks"] if t[1] == "medication-reconciliation"}
    assert (med_rec["VS10"], med_rec["VS11"]) == ("completed", "ready")
    contact = {t[0]: t[2] for t in reference["tasks"] if t[1] == "post-discharge-contact"}
    assert (contact["VS12"], contact["VS13"], contact["VS14"]) == ("ready", "ready", "ready")
    assert ("reopened", "completed", "ready") in {h[:3] for h in reference["history"]}
    assert ("reopened", "cancelled", "ready") in {h[:3] for h in reference["history"]}
    statuses = {t[2] for t in reference["tasks"]}
    assert len(reference["tasks"]) > 40 and {"cancelled", "completed", "ready"} <= statuses
    assert {t[1] for t in reference["tasks"]} >= {
        "fuh-follow-up",
        "admission-notification",
        "medication-reconciliation",
    }
