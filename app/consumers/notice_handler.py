"""Apply one inbound message: decode it to a notice, then in one transaction update patient,
encounter and tasks, and record it in the idempotency ledger.

Outcomes: applied, duplicate (already applied: redelivery is a no-op), rejected (bad input, kept in
rejected_events). Transient database failures propagate so the consumer retries the same message
and never commits its offset before the effects are durable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

from sqlalchemy.ext.asyncio import async_sessionmaker

from app.consumers.batch_apply import BatchApplier
from app.consumers.encounter_apply import EncounterApplier
from app.consumers.results import HandleResult, Outcome, apply_or_reject, reject_payload
from app.encounters.notice import DecodeError, EncounterNotice
from app.encounters.sensitivity import SensitivityPolicy
from app.rules.engine import RuleEngine
from app.state.inbound import Position, event_id_for, record_rejected
from app.state.limits import check_lengths

log = logging.getLogger(__name__)

__all__ = ["HandleResult", "NoticeHandler", "Outcome"]


Decoder = Callable[[bytes], EncounterNotice]


class NoticeHandler:
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
        self.source = source
        self._decode = decode
        self._sessions = sessions
        self._applier = EncounterApplier(source=source, engine=engine, sensitivity=sensitivity)
        self._max_bytes = max_bytes
        self._batch = BatchApplier(source=source, engine=engine, sensitivity=sensitivity)

    def decode(self, payload: bytes) -> EncounterNotice:
        """Every front door and both consumers decode through here, so they refuse the same input."""
        if len(payload) > self._max_bytes:
            raise DecodeError(f"message is {len(payload)} bytes; the limit is {self._max_bytes}", "size")
        try:
            notice = self._decode(payload)
        except DecodeError:
            raise
        except Exception as exc:
            # A parser library tripping over hostile input is still bad input, not a retryable fault.
            raise DecodeError(f"undecodable: {type(exc).__name__}", "MSH" if self.source == "hl7v2" else None) from None
        check_lengths(notice)
        return notice

    async def handle(self, payload: bytes, position: Position) -> HandleResult:
        try:
            notice = self.decode(payload)
        except DecodeError as exc:
            return await self._reject(payload, position, exc.reason, exc.field)
        return await apply_or_reject(
            lambda: self._apply(notice, position), partial(self._reject, payload, position), position
        )

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
                            HandleResult(Outcome.DUPLICATE, str(event_id_for(notice.idempotency_key)))
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

    async def _reject(self, payload: bytes, position: Position, reason: str, field: str | None) -> HandleResult:
        return await reject_payload(self._sessions, self.source, payload, position, reason, field)
