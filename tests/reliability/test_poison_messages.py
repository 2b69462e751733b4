"""Poison messages (issue 9): 1,000 fuzzed HL7 and FHIR messages interleaved with valid ones.

No crash, no stall: every bad one is in the dead letters (rejected_events, exact bytes, a reason), every
good one is applied, and every offset ends in exactly one of the two."""

from __future__ import annotations

import random
from collections import Counter

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import InboundEvent, RejectedEvent
from app.runtime import Runtime
from app.settings import Settings
from tests.conftest import eventually, wait_until_assigned
from tests.reliability.event_mix import Message
from tests.reliability.fuzz_corpus import good_fhir, good_hl7, poison
from tests.reliability.harness import publish

MAX_BYTES = 64 * 1024
BAD, GOOD = 1000, 100  # good ones per feed


async def test_fuzzed_messages_are_dead_lettered_and_valid_ones_applied(settings: Settings, db: AsyncEngine) -> None:
    settings = settings.model_copy(update={"ingest_max_bytes": MAX_BYTES})
    bad = poison(BAD, MAX_BYTES)
    assert len(bad) >= 1000
    good = [Message("adt", b"", good_hl7(i)) for i in range(GOOD)] + [
        Message("fhir", b"", good_fhir(i)) for i in range(GOOD)
    ]
    stream = [Message(p.feed, b"", p.value) for p in bad] + good
    random.Random(9).shuffle(stream)
    topics = {"adt": settings.topics.adt, "fhir": settings.topics.fhir}

    async with Runtime(settings) as rt:
        await wait_until_assigned(rt)
        await publish(rt.bootstrap, topics, stream)

        async def all_accounted() -> bool:
            return await _accounted(db) >= len(stream)

        assert await eventually(all_accounted, timeout_s=120, interval_s=0.5)
        assert all(c.ready for c in rt.consumers), "a consumer stopped"

    async with db.connect() as conn:
        rejected = (await conn.execute(select(RejectedEvent.payload, RejectedEvent.reason, RejectedEvent.topic))).all()
        applied = (await conn.execute(select(InboundEvent.idempotency_key, InboundEvent.topic))).all()
    assert Counter(bytes(r.payload) for r in rejected) == Counter(p.value for p in bad), "exactly the bad ones"
    assert all(r.reason.strip() for r in rejected), "each with a reason"
    by_kind = Counter(p.kind for p in bad)
    assert min(by_kind.values()) >= 80 and len(by_kind) == 8, by_kind
    assert len(applied) == len(good)
    assert Counter(a.topic for a in applied) == {settings.topics.adt: GOOD, settings.topics.fhir: GOOD}


async def _accounted(db: AsyncEngine) -> int:
    async with db.connect() as conn:
        inbound = len((await conn.execute(select(InboundEvent.id))).all())
        rejected = len((await conn.execute(select(RejectedEvent.id))).all())
    return inbound + rejected
