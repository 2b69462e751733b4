"""Sender clocks that run ahead: an event, admit or discharge time too far after receipt is clamped.

A time in the future cannot be true; trusted as sent, it would sort the event after every later
message of the stay (the fold orders by these times), so a later discharge would never finish the
stay. Policy: a time more than the allowed skew after the broker received the message is replaced by
the receipt time, and each clamped field is reported so the caller lists it as a data-quality finding.
The notice keeps the content hash of what was sent (`sent_digest`), so its idempotency key is the
key of the message as received: a resend is still a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from app.encounters.notice import EncounterNotice

_TIMES = ("event_time", "admit_time", "discharge_time")


def _field(notice: EncounterNotice, name: str) -> str:
    """Where a time came from, for the finding (never its value)."""
    if notice.source == "hl7v2":
        return {"admit_time": "PV1-44", "discharge_time": "PV1-45"}.get(
            name, "MSH-7" if notice.event_time_from_envelope else "EVN-2"
        )
    return {"admit_time": "Encounter.period.start", "discharge_time": "Encounter.period.end"}.get(
        name, "Bundle.timestamp" if notice.event_time_from_envelope else "Encounter.period"
    )


@dataclass(frozen=True, slots=True)
class Clamped:
    field: str  # "EVN-2", "PV1-45", "Encounter.period.end" ...
    ahead: timedelta  # how far after receipt the sender put it


def clamp_to_receipt(
    notice: EncounterNotice, received_at: datetime, max_skew: timedelta
) -> tuple[EncounterNotice, tuple[Clamped, ...]]:
    """The notice with no time beyond `received_at + max_skew`, and what was clamped (empty: unchanged)."""
    limit = received_at + max_skew
    changes: dict[str, datetime] = {}
    clamped: list[Clamped] = []
    for name in _TIMES:
        value: datetime | None = getattr(notice, name)
        if value is not None and value > limit:
            changes[name] = received_at
            clamped.append(Clamped(_field(notice, name), value - received_at))
    if not changes:
        return notice, ()
    return replace(notice, sent_digest=notice.content_hash, **changes), tuple(clamped)
