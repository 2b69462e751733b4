"""Apply a FHIR clinical payload (app/consumers/fhir_decode.py) in one transaction.

Same contract as `NoticeHandler`: applied / duplicate / rejected (kept in rejected_events and copied
to `<topic>.dlq` by the runner), transient faults propagate so the consumer retries, offsets are
committed only after this transaction. Each resource is applied once per identity + content
(the idempotency ledger), so a resent Bundle is a no-op and a Bundle that adds one new resource
applies only that one.

- Encounter: an `EncounterNotice`, applied exactly as ADT and Da Vinci notices are (one encounter
  state, the same rules and tasks).
- Questionnaire: stored and registered under url|version; responses that were waiting for it are scored.
- Procedure / Observation coded as evidence (the rules' `complete.evidence_codes`: medication
  reconciliation): stored; a completed Procedure or final Observation completes the open tasks whose
  rule lists the code, within the rule's window (app/consumers/evidence_rules.py).
- Observation / QuestionnaireResponse: stored; a countable result (final/amended/corrected, or a
  completed/amended response) creates or updates the source's screening event, anything else
  (entered-in-error, cancelled, in-progress ...) retracts it. A response whose Questionnaire is not
  registered yet waits for it (`awaiting_questionnaire`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime

from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.consumers.encounter_apply import EncounterApplier
from app.consumers.evidence_rules import apply_evidence_rules, retract_evidence
from app.consumers.feed_handler import FeedHandler
from app.consumers.fhir_decode import (
    RESPONSE_STATUSES,
    RESULT_STATUSES,
    EncounterItem,
    EvidenceItem,
    FhirDecodeError,
    FhirMessage,
    Item,
    ObservationItem,
    PatientRef,
    QuestionnaireItem,
    ResponseItem,
)
from app.consumers.results import HandleResult, Outcome
from app.consumers.screening_rules import apply_screening_rules
from app.db.models import FhirResource, Patient
from app.rules.config import ScreeningThresholds
from app.screening.scoring import (
    QuestionnaireDefinition,
    Score,
    ScoringError,
    observation_score,
    result_of,
    score_response,
)
from app.state.clinical import (
    find_questionnaire,
    record_screening,
    register_questionnaire,
    responses_awaiting,
    store_resource,
)
from app.state.inbound import Position, already_applied, event_id_for, record_applied, record_rejected
from app.state.patients import patient_by_id, resolve_patient

log = logging.getLogger(__name__)

Decoder = Callable[[bytes], FhirMessage]
SCORING_SOURCE = "fhir-scoring"  # rejected_events of stored responses their late Questionnaire cannot score


class FhirHandler(FeedHandler[FhirMessage]):
    def __init__(
        self,
        *,
        decode: Decoder,
        sessions: async_sessionmaker,
        encounters: EncounterApplier,
        thresholds: ScreeningThresholds,
        max_bytes: int,
        part2_instruments: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(source=encounters.source, decode=decode, sessions=sessions, max_bytes=max_bytes)
        self._encounters = encounters
        self._thresholds = thresholds
        self._part2_instruments = part2_instruments  # substance-use screens: their tasks are Part 2

    async def check_against_state(self, message: FhirMessage) -> None:
        """What the front door can also judge from the database, so HTTP senders get a 422 instead of
        a dead letter: an unknown `Patient/{id}` subject, a response its registered form cannot score."""
        async with self._sessions() as session:
            for item in message.items:
                if isinstance(item, ObservationItem | ResponseItem | EvidenceItem):
                    await self._patient(session, item, create=False)
                if isinstance(item, ResponseItem) and item.score is None and item.status in RESPONSE_STATUSES:
                    definition = await find_questionnaire(session, item.questionnaire_url, item.questionnaire_version)
                    if definition is not None:
                        self._scored(definition, item)

    async def _apply(self, message: FhirMessage, position: Position) -> HandleResult:
        applied = created = cancelled = 0
        async with self._sessions() as session, session.begin():
            for item in message.items:
                if isinstance(item, EncounterItem):
                    result = await self._encounters.apply_in(session, item.notice, position)
                    applied += result.outcome is Outcome.APPLIED
                    created += result.tasks_created
                    cancelled += result.tasks_cancelled
                elif not await already_applied(session, item.idempotency_key):
                    await self._apply_item(session, item, position)
                    applied += 1
        event_id = str(event_id_for(message.idempotency_key))
        if not applied:
            log.info("event already applied", extra={"event_id": event_id, "offset": position.offset})
            return HandleResult(Outcome.DUPLICATE, event_id, message_type=f"fhir:{len(message.items)}")
        result = HandleResult(
            Outcome.APPLIED,
            event_id,
            tasks_created=created,
            tasks_cancelled=cancelled,
            message_type=f"fhir:{len(message.items)}",
        )
        result.log_applied()
        return result

    async def _apply_item(self, session: AsyncSession, item: Item, position: Position) -> None:
        patient = await self._patient(session, item) if not isinstance(item, QuestionnaireItem) else None
        common = {
            "resource_type": item.resource_type,
            "identity": item.identity,
            "content": item.content,
            "content_hash": item.content_hash,
            "patient_id": patient.id if patient else None,
        }
        effective_at = None
        if isinstance(item, QuestionnaireItem):
            row = await store_resource(session, status=item.content.get("status", "unknown"), **common)
            await register_questionnaire(session, row, item.definition)
            await self._score_waiting(session, item.definition)
        elif isinstance(item, ObservationItem):
            effective_at = item.effective_at
            row = await store_resource(session, status=item.status, code=item.code, effective_at=effective_at, **common)
            score = None
            if item.status in RESULT_STATUSES and item.value is not None:
                score = observation_score(item.code, item.value, item.item9)
            await self._screen(session, row, score, patient, effective_at)
        elif isinstance(item, EvidenceItem):
            effective_at = item.performed_at
            row = await store_resource(session, status=item.status, code=item.code, effective_at=effective_at, **common)
            if patient is not None:
                if item.counts:
                    await apply_evidence_rules(session, self._encounters.engine, row, patient)
                else:
                    await retract_evidence(session, self._encounters.engine, row, patient)
        else:
            assert isinstance(item, ResponseItem)
            effective_at = item.authored_at
            score, definition = None, None
            if item.status in RESPONSE_STATUSES:
                definition = await find_questionnaire(session, item.questionnaire_url, item.questionnaire_version)
                score = item.score or (self._scored(definition, item) if definition else None)
            waiting = item.questionnaire_url if item.status in RESPONSE_STATUSES and score is None else None
            row = await store_resource(
                session, status=item.status, effective_at=effective_at, awaiting_questionnaire=waiting, **common
            )
            if waiting:
                log.info("response awaits its questionnaire", extra={"resource_id": str(row.id)})
            await self._screen(session, row, score, patient, effective_at)
        record_applied(
            session,
            idempotency_key=item.idempotency_key,
            source=self.source,
            message_type=item.resource_type[:32],
            position=position,
            patient_id=patient.id if patient else None,
            encounter_id=None,
            event_time=effective_at,
        )

    async def _screen(
        self,
        session: AsyncSession,
        row: FhirResource,
        score: Score | None,
        patient: Patient | None,
        effective_at: datetime | None,
    ) -> None:
        result = result_of(self._thresholds, score, patient.sex if patient else None) if score is not None else None
        event = await record_screening(session, row, result, effective_at)
        if event is not None and patient is not None:
            part2 = event.instrument in self._part2_instruments
            await apply_screening_rules(session, self._encounters.engine, event, patient, part2=part2)

    @staticmethod
    def _scored(definition: QuestionnaireDefinition, item: ResponseItem) -> Score:
        try:
            return score_response(definition, item.response, item.path)
        except ScoringError as exc:
            raise FhirDecodeError(exc.reason, exc.field, http_status=422) from None

    async def _score_waiting(self, session: AsyncSession, definition: QuestionnaireDefinition) -> None:
        """Responses that came before their Questionnaire (another partition, or an earlier message)
        are scored now, so arrival order does not matter. One that cannot be scored keeps waiting (a
        corrected Questionnaire scores it) and is listed as a dead letter of source `fhir-scoring`:
        there is nothing to replay, fix the form or send an amended response, then discard the row."""
        for row in await responses_awaiting(session, definition.url):
            version = str(row.content.get("questionnaire", "")).partition("|")[2]
            if version and version != definition.version:
                continue
            response = QuestionnaireResponse.model_validate(row.content)
            try:
                score = score_response(definition, response, "QuestionnaireResponse")
            except ScoringError as exc:
                await record_rejected(
                    session,
                    source=SCORING_SOURCE,
                    position=Position(None, None, None),
                    reason=f"scored when {definition.url} was registered: {exc.reason}",
                    field=exc.field,
                    payload=json.dumps(row.content).encode(),
                )
                log.warning("waiting response could not be scored", extra={"resource_id": str(row.id)})
                continue
            row.awaiting_questionnaire = None
            patient = await session.get(Patient, row.patient_id) if row.patient_id else None
            await self._screen(session, row, score, patient, row.effective_at)

    async def _patient(self, session: AsyncSession, item: Item, *, create: bool = True) -> Patient | None:
        """The subject's patient; with `create` False only checks that a `Patient/{id}` exists."""
        ref: PatientRef = item.patient  # type: ignore[attr-defined]
        if ref.local_id is not None:
            patient = await patient_by_id(session, ref.local_id)
            if patient is None:
                raise FhirDecodeError(
                    f"Patient/{ref.local_id} is not known here", f"{item.path}.subject", http_status=422
                )
            return patient
        return await resolve_patient(session, ref) if create else None
