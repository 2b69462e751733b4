"""Run the rules on a stored evidence record (a medication reconciliation Procedure or Observation)
inside the caller's transaction: it completes the open tasks whose rule lists its code."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import FhirResource, Patient
from app.rules.engine import RuleEngine
from app.rules.facts import EvidenceRecord
from app.state.patient_context import completed_by_record, load_contexts, patient_facts
from app.state.tasks import apply_effects

ACTOR = "event:evidence"


async def apply_evidence_rules(session: AsyncSession, engine: RuleEngine, row: FhirResource, patient: Patient) -> int:
    """Tasks completed. The record's id is the evidence event id shown in the task's history."""
    assert row.code is not None and row.effective_at is not None
    contexts = await load_contexts(session, [patient.id])
    record = EvidenceRecord(str(row.id), row.code, row.effective_at)
    effects = engine.on_evidence(record, patient_facts(patient, contexts))
    await apply_effects(
        session, effects, contexts.open_tasks[patient.id], patient.id, actor=ACTOR, event_id=str(row.id)
    )
    return len(effects.complete)


async def retract_evidence(session: AsyncSession, engine: RuleEngine, row: FhirResource, patient: Patient) -> int:
    """The record no longer counts (entered in error, not done after all): the tasks it completed
    reopen unless other evidence still completes them. Returns how many reopened."""
    closed, facts = await completed_by_record(session, patient.id, row.id)
    if not closed:
        return 0
    contexts = await load_contexts(session, [patient.id], engine.evidence_codes)
    patient_view = replace(patient_facts(patient, contexts), closed_by_encounter=facts)
    effects = engine.on_evidence_retracted(str(row.id), patient_view)
    await apply_effects(session, effects, closed, patient.id, actor=ACTOR, event_id=str(row.id))
    return len(effects.reopen)
