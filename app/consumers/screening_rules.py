"""Run the rules on a recorded screening event (or its amendment or retraction) inside the caller's
transaction: the BH referral, suicide-risk response and PHQ-9 follow-up of the rules file."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Patient
from app.db.models import ScreeningEvent as ScreeningRow
from app.rules.engine import RuleEngine
from app.rules.facts import ScreeningEvent, ScreeningStatus
from app.screening.instruments import InstrumentId
from app.state.patient_context import load_contexts, patient_facts
from app.state.tasks import apply_effects


async def apply_screening_rules(
    session: AsyncSession, engine: RuleEngine, row: ScreeningRow, patient: Patient, *, part2: bool = False
) -> tuple[int, int]:
    """(tasks created, tasks cancelled). `part2`: a substance-use screening, so its tasks carry the label."""
    await session.flush()  # the event itself counts towards the patient's BH population
    contexts = await load_contexts(session, [patient.id], engine.evidence_codes)
    facts = patient_facts(patient, contexts)
    # The patient's other active screens: they may still support (or, after a retraction, raise)
    # what this one raised.
    others = await session.execute(
        select(ScreeningRow).where(
            ScreeningRow.patient_id == patient.id,
            ScreeningRow.status == ScreeningStatus.ACTIVE,
            ScreeningRow.id != row.id,
        )
    )
    effects = engine.on_screening_event(
        screening_fact(row), facts, tuple(screening_fact(other) for other in others.scalars())
    )
    return await apply_effects(
        session,
        effects,
        contexts.open_tasks[patient.id],
        patient.id,
        actor="event:screening",
        event_id=str(row.id),
        part2=part2,
    )


def screening_fact(row: ScreeningRow) -> ScreeningEvent:
    alone = row.instrument == InstrumentId.PHQ9_ITEM9  # an item 9 result sent on its own
    return ScreeningEvent(
        event_id=str(row.id),
        instrument=row.instrument,
        score=row.score,
        positive=row.positive,
        effective_at=row.effective_at,
        item9=row.item9_score if row.item9_score is not None else (row.score if alone else None),
        status=ScreeningStatus.RETRACTED if row.status == ScreeningStatus.RETRACTED else ScreeningStatus.ACTIVE,
    )
