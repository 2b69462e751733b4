"""Clinical order and ED-to-inpatient conversions end to end (real broker, real database, shipped
rules), on the per-message and the set-based batch path alike:

- a late-entered A01 (EVN-2 after the A03's, PV1-44 before the discharge) leaves the stay finished: its
  contact and medication reconciliation stay open, no in-reach is raised for a patient at home;
- a visit converted from ED to inpatient (A06, an A08 or A02 with a new PV1-2, a Da Vinci transfer
  EMER -> IMP) raises the admission in-reach as an A01 does, once.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import Encounter, InboundEvent, Task, utcnow
from app.messaging.keys import patient_partition_key
from app.runtime import Runtime
from app.settings import DEFAULT_RULES_FILE, Settings
from tests.conftest import eventually, wait_until_assigned
from tests.hl7_builder import adt, hl7_ts, stay_ended
from tests.integration.test_adt_pipeline import produce

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "samples" / "fhir"
IN_REACH = "admission-notification"


@pytest.fixture(params=[False, True], ids=["per-message", "batch"])
def shipped(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    suffix = uuid.uuid4().hex[:8]
    topics = settings.topics.model_copy(update={"ens": f"ens-{suffix}", "ens_dead_letter": f"ens-dlq-{suffix}"})
    return settings.model_copy(
        update={"rules_file": DEFAULT_RULES_FILE, "consumer_batch_transactions": request.param, "topics": topics}
    )


@pytest.fixture
async def running(shipped: Settings, db: AsyncEngine) -> AsyncIterator[Runtime]:
    async with Runtime(shipped) as runtime:
        await wait_until_assigned(runtime)
        yield runtime


async def applied(db: AsyncEngine, n: int) -> None:
    async def done() -> bool:
        async with db.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(InboundEvent)) or 0) >= n

    assert await eventually(done), f"expected {n} applied events"


async def send(runtime: Runtime, db: AsyncEngine, applied_after: int, *messages: str) -> None:
    key = patient_partition_key("urn:hl7v2:aa:GOODHEALTH", "MRN12345")
    await produce(runtime.settings, *(m.encode() for m in messages), key=key)
    await applied(db, applied_after)


async def tasks(db: AsyncEngine) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    async with db.connect() as conn:
        for t in (await conn.execute(select(Task).order_by(Task.created_at))).all():
            found.setdefault(t.type, []).append(t.status)
    return found


async def test_a_late_entered_admit_does_not_reopen_the_finished_stay(running: Runtime, db: AsyncEngine) -> None:
    stay = stay_ended(2)
    await send(running, db, 1, adt("A03", control_id="A03", **stay))
    assert await tasks(db) == {"post-discharge-contact": ["ready"], "medication-reconciliation": ["ready"]}
    # Entered an hour ago, long after the A03, for the admission that A03 already ended.
    late = dict(stay, event_time=hl7_ts(utcnow() - timedelta(hours=1)), message_time=hl7_ts(utcnow()))
    late.pop("discharge_time")
    await send(running, db, 2, adt("A01", control_id="A01-late", **late))
    async with db.connect() as conn:
        [enc] = (await conn.execute(select(Encounter))).all()
    assert enc.status == "finished" and enc.discharge_at is not None
    assert await tasks(db) == {"post-discharge-contact": ["ready"], "medication-reconciliation": ["ready"]}


ED_VISIT = dict(patient_class="E", hospital_service="EM", visit_number="V-ED")


def _ed(control_id: str, trigger: str, hours_ago: float, patient_class: str = "E") -> str:
    at = utcnow() - timedelta(hours=hours_ago)
    return adt(
        trigger,
        control_id=control_id,
        **dict(ED_VISIT, patient_class=patient_class),
        admit_time=hl7_ts(utcnow() - timedelta(hours=6)),
        event_time=hl7_ts(at),
        message_time=hl7_ts(at),
    )


@pytest.mark.parametrize("trigger", ["A06", "A08", "A02"])
async def test_an_ed_visit_converted_to_inpatient_raises_the_in_reach_once(
    running: Runtime, db: AsyncEngine, trigger: str
) -> None:
    await send(running, db, 1, _ed("ED", "A04", 6))
    assert IN_REACH not in await tasks(db)
    await send(running, db, 2, _ed("CONVERT", trigger, 4, patient_class="I"))
    assert (await tasks(db)).get(IN_REACH) == ["ready"]
    # The same conversion again, an update of the inpatient stay, then the A01 some sites also send.
    await send(
        running,
        db,
        5,
        _ed("CONVERT-2", trigger, 3, patient_class="I"),
        _ed("UPDATE", "A08", 2, patient_class="I"),
        _ed("A01", "A01", 1, patient_class="I"),
    )
    assert (await tasks(db)).get(IN_REACH) == ["ready"]
    async with db.connect() as conn:
        [enc] = (await conn.execute(select(Encounter))).all()
    assert (enc.class_code, enc.status) == ("IMP", "in-progress")


def _bundle(kind: str, bundle_id: str) -> bytes:
    data = json.loads((SAMPLES / f"davinci-{kind}-notification-message-bundle-01.json").read_text(encoding="utf-8"))
    data["id"] = bundle_id
    return json.dumps(data).encode()


async def test_a_davinci_transfer_from_emer_to_imp_raises_the_in_reach_once(running: Runtime, db: AsyncEngine) -> None:
    from tests.integration.test_davinci import PATIENT_KEY, produce_ens

    # The samples: the admit notification says EMER, the transfer IMP.
    await produce_ens(running.settings, _bundle("admit", "dv-admit"), key=PATIENT_KEY)
    await applied(db, 1)
    assert IN_REACH not in await tasks(db)
    await produce_ens(running.settings, _bundle("transfer", "dv-transfer"), key=PATIENT_KEY)
    await applied(db, 2)
    assert (await tasks(db)).get(IN_REACH) == ["ready"]
    await produce_ens(running.settings, _bundle("transfer", "dv-transfer-again"), key=PATIENT_KEY)
    await applied(db, 3)
    assert (await tasks(db)).get(IN_REACH) == ["ready"]
