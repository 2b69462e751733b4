"""Real feeds reuse control ids and run their clocks ahead: nothing is dropped, and data staff see it.

Over the real broker and database: a second message under a reused MSH-10 / Bundle id with other
content is applied and listed as a finding (an identical resend stays a no-op); a time beyond the
allowed skew after receipt is clamped and listed, and a later discharge still finishes the stay.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app import clock
from app.db.models import DataQualityFinding, Encounter, InboundEvent, Patient, Task
from app.metrics import sample
from app.runtime import Runtime
from app.settings import Settings
from app.state.inbound import event_id_for
from tests.conftest import bearer, eventually
from tests.hl7_builder import adt, hl7_ts, stay_ended
from tests.integration.test_adt_pipeline import _committed_to_end, count, produce
from tests.integration.test_adt_semantics import rows, settle

PATH = "/admin/data-quality"


def reused(kind: str = "control-id-reused", source: str = "hl7v2") -> float:
    return sample("carecoord_data_quality_findings_total", kind=kind, source=source) or 0.0


async def findings(client: httpx.AsyncClient, token: str, **params: str) -> dict:
    resp = await client.get(PATH, params=params, headers=bearer(token))
    assert resp.status_code == 200, resp.text
    return resp.json()


async def test_a_reused_control_id_with_other_content_is_applied_and_listed(
    runtime: Runtime, settings: Settings, client: httpx.AsyncClient, token_for: Callable[..., str], db: AsyncEngine
) -> None:
    before = reused()
    times = stay_ended(2)
    first = adt("A03", control_id="SAME-1", mrn="MRN-A", family="ALPHA", visit_number="VA", **times).encode()
    other = adt("A03", control_id="SAME-1", mrn="MRN-B", family="BRAVO", visit_number="VB", **times).encode()
    await produce(settings, first, key=b"a")
    await settle(db, 1)
    # The second patient's discharge under the same control id, then an exact resend of each.
    await produce(settings, other, first, other, key=b"a")
    await eventually(lambda: _committed_to_end(runtime))
    await settle(db, 2)

    assert await count(db, Patient) == 2 and await count(db, Encounter) == 2
    contacts = [t for t in await rows(db, Task) if t.type == "post-discharge-contact"]
    assert len(contacts) == 2, "both patients' discharges raised their contact task"
    [one, two] = sorted(await rows(db, InboundEvent), key=lambda e: e.offset)
    assert one.message_identity == two.message_identity == "hl7v2|GOODHEALTH|SAME-1"
    assert one.content_hash != two.content_hash

    admin = token_for("ADMIN", sub="data-staff")
    body = await findings(client, admin)
    assert body["total"] == 1
    [finding] = body["items"]
    assert finding["kind"] == "control-id-reused" and finding["field"] == "MSH-10"
    assert finding["inbound_event_id"] == str(two.id) and finding["related_event_id"] == str(one.id)
    assert finding["message"] == "hl7v2|GOODHEALTH|SAME-1"
    assert "BRAVO" not in json.dumps(body) and "MRN-B" not in json.dumps(body)
    assert reused() == before + 1
    assert (await findings(client, admin, kind="event-time-ahead"))["total"] == 0

    denied = await client.get(PATH, headers=bearer(token_for("PMC")))
    assert denied.status_code == 403


async def test_a_resend_that_only_restamps_msh7_is_the_same_message(
    runtime: Runtime, settings: Settings, db: AsyncEngine
) -> None:
    """MSH-7 is the envelope: a sender's retry may restamp it. With EVN-2 sent, the content is the same."""
    times = stay_ended(1)
    original = adt(control_id="RETRY-1", **times).encode()
    later = clock.now() + timedelta(minutes=3)
    restamped = adt(control_id="RETRY-1", **{**times, "message_time": hl7_ts(later)}).encode()
    await produce(settings, original, restamped)
    await eventually(lambda: _committed_to_end(runtime))
    assert await count(db, InboundEvent) == 1
    assert await count(db, DataQualityFinding) == 0


async def test_a_ledger_row_from_before_the_content_hash_still_makes_a_resend_a_no_op(
    runtime: Runtime, settings: Settings, db: AsyncEngine
) -> None:
    """Rows applied before migration 0017 carry their identity and no hash: never applied twice."""
    async with AsyncSession(db) as session, session.begin():
        session.add(
            InboundEvent(
                id=event_id_for("hl7v2|GOODHEALTH|OLD-1"),
                idempotency_key="hl7v2|GOODHEALTH|OLD-1",
                message_identity="hl7v2|GOODHEALTH|OLD-1",
                source="hl7v2",
                message_type="ADT^A03",
                status="applied",
            )
        )
    await produce(settings, adt(control_id="OLD-1", **stay_ended(1)).encode())
    await eventually(lambda: _committed_to_end(runtime))
    assert await count(db, InboundEvent) == 1
    assert await count(db, Task) == 0


async def test_a_sender_clock_running_ahead_is_clamped_and_a_later_discharge_finishes_the_stay(
    runtime: Runtime, settings: Settings, client: httpx.AsyncClient, token_for: Callable[..., str], db: AsyncEngine
) -> None:
    now = clock.now()
    ahead = now + timedelta(days=2)  # the admitting system's clock is two days fast
    admit = adt(
        "A01", control_id="FAST-1", event_time=hl7_ts(ahead), message_time=hl7_ts(ahead), admit_time=hl7_ts(ahead)
    )
    await produce(settings, admit.encode())
    await settle(db, 1)
    [enc] = await rows(db, Encounter)
    assert enc.status == "in-progress"
    assert enc.admit_at is not None and enc.admit_at < now + timedelta(minutes=5), "clamped to receipt"

    # The discharge, sent by a system with a correct clock, comes after the receipt of the admit.
    discharged = clock.now() + timedelta(seconds=1)
    discharge = adt(
        "A03",
        control_id="RIGHT-1",
        event_time=hl7_ts(discharged),
        message_time=hl7_ts(discharged),
        admit_time=hl7_ts(enc.admit_at),
        discharge_time=hl7_ts(discharged),
    )
    await produce(settings, discharge.encode())
    await settle(db, 2)
    [enc] = await rows(db, Encounter)
    assert enc.status == "finished", "a later discharge still finishes the stay"
    assert {t.type for t in await rows(db, Task)} >= {"post-discharge-contact"}

    body = await findings(client, token_for("ADMIN"), kind="event-time-ahead")
    assert sorted(f["field"] for f in body["items"]) == ["EVN-2", "PV1-44"]
    assert all("s after the message was received" in f["detail"] for f in body["items"])


async def test_findings_on_a_part2_stay_are_hidden_without_the_part2_permission(
    runtime: Runtime, settings: Settings, client: httpx.AsyncClient, token_for: Callable[..., str], db: AsyncEngine
) -> None:
    times = stay_ended(2)
    sud = adt("A03", control_id="SUD-1", hospital_service="SUD", visit_number="VS", **times).encode()
    sud_other = adt("A03", control_id="SUD-1", hospital_service="SUD", visit_number="VS2", **times).encode()
    await produce(settings, sud, key=b"s")
    await settle(db, 1)
    await produce(settings, sud_other, key=b"s")
    await settle(db, 2)
    assert (await findings(client, token_for("ADMIN", "PART2")))["total"] == 1
    hidden = await findings(client, token_for("ADMIN"))
    assert hidden == {"items": [], "count": 0, "total": 0}
