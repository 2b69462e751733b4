"""What a handler did with one inbound record, and how a rejected record is set aside.

Shared by every feed's handler (HL7 v2 ADT, Da Vinci notifications, FHIR clinical resources) so the
consumer runner and the dead-letter replay treat them alike.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker

from app.consumers.transient import is_transient
from app.encounters.notice import DecodeError
from app.state.inbound import Position, record_rejected

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    APPLIED = "applied"
    NOT_ACTED_ON = "not-acted-on"  # recorded in the ledger; an event type the service has no use for
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class HandleResult:
    outcome: Outcome
    event_id: str | None = None
    reason: str | None = None
    field: str | None = None
    tasks_created: int = 0
    tasks_cancelled: int = 0
    message_type: str | None = None

    def log_applied(self) -> None:
        """Called only after the commit, so the log never claims an effect that was rolled back."""
        if self.outcome is Outcome.APPLIED:
            log.info(
                "event applied",
                extra={
                    "event_id": self.event_id,
                    "type": self.message_type,
                    "tasks_created": self.tasks_created,
                    "tasks_cancelled": self.tasks_cancelled,
                },
            )


async def reject_payload(
    sessions: async_sessionmaker, source: str, payload: bytes, position: Position, reason: str, field: str | None
) -> HandleResult:
    """Keep the exact bytes with the reason in `rejected_events`; the runner copies them to the DLQ topic."""
    async with sessions() as session, session.begin():
        row = await record_rejected(
            session, source=source, position=position, reason=reason, field=field, payload=payload
        )
    log.warning(
        "event rejected",
        extra={"rejected_id": str(row.id), "topic": position.topic, "offset": position.offset, "field": field},
    )
    return HandleResult(Outcome.REJECTED, reason=reason, field=field)


async def apply_or_reject(
    apply: Callable[[], Awaitable[HandleResult]],
    reject: Callable[[str, str | None], Awaitable[HandleResult]],
    position: Position,
) -> HandleResult:
    """Run `apply` (one transaction); bad data is rejected, transient faults propagate for a retry."""
    try:
        try:
            return await apply()
        except IntegrityError:
            # A concurrent writer got there first: the same message (a duplicate), or the same new
            # patient, visit or task from another feed. One fresh attempt sees its rows.
            return await apply()
    except DecodeError as exc:  # input that only the database shows to be unusable (an unknown reference)
        return await reject(exc.reason, exc.field)
    except IntegrityError:
        return await reject("conflicting data: integrity constraint violated", None)
    except Exception as exc:
        if is_transient(exc):
            raise
        # A deterministic failure on this message (a bug or data the schema refuses): set it aside.
        log.exception("event processing failed", extra={"topic": position.topic, "offset": position.offset})
        return await reject(f"processing failed: {type(exc).__name__}: {exc}", None)
