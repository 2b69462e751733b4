"""Run the rules on a stored evidence record (a medication reconciliation Procedure or Observation)
inside the caller's transaction: it completes the open tasks whose rule lists its code."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import FhirResource, Patient
from app.rules.engine import RuleEngine
from app.rules.facts import EvidenceRecord
from app.state.patient_context import load_contexts, patient_facts
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
