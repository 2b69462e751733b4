"""Apply one inbound message: decode it to a notice, then in one transaction update patient,
encounter and tasks, and record it in the idempotency ledger.

Outcomes: applied, duplicate (already applied: redelivery is a no-op), rejected (bad input, kept in
rejected_events). Transient database failures propagate so the consumer retries the same message
and never commits its offset before the effects are durable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy.ext.asyncio import async_sessionmaker

from app.consumers.batch_apply import BatchApplier
from app.consumers.encounter_apply import EncounterApplier
from app.consumers.feed_handler import FeedHandler
from app.consumers.results import HandleResult, Outcome
from app.encounters.notice import DecodeError, EncounterNotice
from app.encounters.sensitivity import SensitivityPolicy
from app.rules.engine import RuleEngine
from app.state.inbound import Position, event_id_for, record_rejected
from app.state.limits import check_lengths

log = logging.getLogger(__name__)

__all__ = ["HandleResult", "NoticeHandler", "Outcome"]


Decoder = Callable[[bytes], EncounterNotice]


class NoticeHandler(FeedHandler[EncounterNotice]):
    def __init__(
        self,
        *,
        source: str,
        decode: Decoder,
        sessions: async_sessionmaker,
        engine: RuleEngine,
        sensitivity: SensitivityPolicy,
        max_bytes: int,
    ) -> None:
        super().__init__(
            source=source,
            decode=decode,
            sessions=sessions,
            max_bytes=max_bytes,
            undecodable_field="MSH" if source == "hl7v2" else None,
        )
        self._applier = EncounterApplier(source=source, engine=engine, sensitivity=sensitivity)
        self._batch = BatchApplier(source=source, engine=engine, sensitivity=sensitivity)

    def _check(self, message: EncounterNotice) -> None:
        check_lengths(message)

    async def handle_batch(self, records: list[tuple[bytes, Position]]) -> list[HandleResult] | None:
        """Apply a partition's records in order in ONE transaction: set-based when the batch allows
        (see batch_apply.py), else message by message inside it. Returns None if anything failed:
        nothing was committed, and the caller falls back to `handle` per record, which isolates it."""
        results: list[HandleResult | None] = [None] * len(records)
        decoded: list[tuple[int, EncounterNotice, Position]] = []
        rejections: list[tuple[int, DecodeError]] = []
        try:
            async with self._sessions() as session, session.begin():
                for i, (payload, position) in enumerate(records):
                    try:
                        decoded.append((i, self.decode(payload), position))
                    except DecodeError as exc:
                        await record_rejected(
                            session,
                            source=self.source,
                            position=position,
                            reason=exc.reason,
                            field=exc.field,
                            payload=payload,
                        )
                        rejections.append((i, exc))
                        results[i] = HandleResult(Outcome.REJECTED, reason=exc.reason, field=exc.field)
                bulk = await self._batch.apply(session, [(n, p) for _, n, p in decoded]) if decoded else []
                if bulk is None:
                    for i, notice, position in decoded:
                        results[i] = await self._applier.apply_in(session, notice, position)
                else:
                    for (i, notice, _), done in zip(decoded, bulk, strict=True):
                        results[i] = (
                            HandleResult(
                                Outcome.DUPLICATE,
                                str(event_id_for(notice.idempotency_key)),
                                message_type=notice.message_type,
                            )
                            if done is None
                            else HandleResult(
                                Outcome.APPLIED,
                                done.event_id,
                                tasks_created=done.tasks_created,
                                tasks_cancelled=done.tasks_cancelled,
                                message_type=done.message_type,
                            )
                        )
        except Exception as exc:  # any failure: the per-record path decides, record by record
            log.info(
                "batch fell back to per-record processing", extra={"records": len(records), "error": type(exc).__name__}
            )
            return None
        final = [r for r in results if r is not None]
        for result in final:
            result.log_applied()
        for i, exc in rejections:
            log.warning(
                "event rejected",
                extra={"topic": records[i][1].topic, "offset": records[i][1].offset, "field": exc.field},
            )
        return final

    async def _apply(self, notice: EncounterNotice, position: Position) -> HandleResult:
        async with self._sessions() as session, session.begin():
            result = await self._applier.apply_in(session, notice, position)
        result.log_applied()
        return result
