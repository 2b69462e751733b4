"""Dead-letter admin API over the real broker and database: list, read, fix-and-replay, discard."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.api.app import create_app
from app.consumers.hl7v2_decode import Hl7DecodeError
from app.db.models import AuditEvent, InboundEvent, Patient, RejectedEvent, Task
from app.runtime import Runtime
from app.settings import Settings
from app.state.value_free import value_free_reason
from tests.conftest import bearer, eventually
from tests.hl7_builder import adt
from tests.integration.test_adt_pipeline import count, produce, tasks_over_http

PATH = "/admin/dead-letters"
PROBLEM = "application/problem+json"
SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "samples" / "fhir"


async def rejected_rows(db: AsyncEngine) -> list:
    async with db.connect() as conn:
        return list((await conn.execute(select(RejectedEvent).order_by(RejectedEvent.created_at))).all())


async def n_rejected(db: AsyncEngine, n: int) -> list | None:
    rows = await rejected_rows(db)
    return rows if len(rows) == n else None


async def audits(db: AsyncEngine, action: str) -> list:
    async with db.connect() as conn:
        query = select(AuditEvent).where(AuditEvent.action == action, AuditEvent.resource_type == "RejectedEvent")
        return list((await conn.execute(query.order_by(AuditEvent.id))).all())


async def insert_rejected(db: AsyncEngine, *rows: RejectedEvent) -> None:
    async with AsyncSession(db, expire_on_commit=False) as session, session.begin():
        session.add_all(rows)


def rejected(payload: bytes, offset: int | None, **kw: object) -> RejectedEvent:
    """A row as the consumer would have written it (topic None: a row without a broker position)."""
    fields: dict[str, object] = {
        "source": "hl7v2",
        "topic": "adt-earlier" if offset is not None else None,
        "partition": 0 if offset is not None else None,
        "offset": offset,
        "reason": "processing failed: an earlier bug",
        "field": None,
        "payload": payload,
        **kw,
    }
    return RejectedEvent(**fields)


async def test_broker_rejections_are_listed_and_read_with_exact_bytes(
    runtime: Runtime, settings: Settings, client: httpx.AsyncClient, token_for: Callable[..., str], db: AsyncEngine
) -> None:
    garbage = b"\x00\xffnot hl7 at all"
    no_control_id = adt(control_id="").encode()
    await produce(settings, garbage, no_control_id, key=b"same-partition")
    rows = await eventually(lambda: n_rejected(db, 2))
    assert rows, "both bad messages were rejected"
    admin = bearer(token_for("ADMIN", sub="admin-1"))

    listing = await client.get(PATH, headers=admin)
    assert listing.status_code == 200, listing.text
    body = listing.json()
    assert body["total"] == 2 and body["count"] == 2 and body["next_cursor"] is None
    # Newest first: the MSH-10 rejection (offset 1) came after the garbage (offset 0).
    assert [(i["offset"], i["field"], i["status"]) for i in body["items"]] == [
        (1, "MSH-10", "open"),
        (0, "MSH-18", "open"),
    ]
    first = body["items"][0]
    assert "payload" not in first and first["payload_size"] == len(no_control_id)
    assert body["items"][1]["payload_size"] == len(garbage)
    assert first["topic"] == settings.topics.adt and first["source"] == "hl7v2"
    assert "MSH-10 is required" in first["reason"]

    for params, total in (
        ({"status": "open"}, 2),
        ({"status": "replayed"}, 0),
        ({"topic": settings.topics.adt}, 2),
        ({"topic": "some-other-topic"}, 0),
        ({"source": "hl7v2", "status": "open"}, 2),
        ({"source": "fhir"}, 0),
    ):
        resp = await client.get(PATH, params=params, headers=admin)
        assert resp.status_code == 200 and resp.json()["total"] == total, (params, resp.text)
    bad_status = await client.get(PATH, params={"status": "bogus"}, headers=admin)
    assert bad_status.status_code == 422 and bad_status.json()["field"] == "status"

    # Neither payload decodes, so neither can be ruled out as 42 CFR Part 2 data: withheld from an
    # admin without the Part 2 permission (fail closed), shown to one with it.
    withheld = await client.get(f"{PATH}/{first['id']}", headers=admin)
    assert withheld.status_code == 403 and withheld.json()["field"] == "payload", withheld.text
    assert "payload" not in withheld.json() and no_control_id.decode() not in withheld.text
    admin = bearer(token_for("ADMIN", "PART2", sub="admin-1"))
    text_item = await client.get(f"{PATH}/{first['id']}", headers=admin)
    assert text_item.status_code == 200, text_item.text
    detail = text_item.json()
    assert detail["encoding"] == "utf-8" and detail["payload"].encode() == no_control_id
    assert detail["payload_size"] == len(no_control_id) and detail["field"] == "MSH-10"

    binary = (await client.get(f"{PATH}/{body['items'][1]['id']}", headers=admin)).json()
    assert binary["encoding"] == "base64" and base64.b64decode(binary["payload"]) == garbage

    # Every access is audited, each read of a payload naming the row it exposed.
    reads = await audits(db, "R")
    first_read, second_read = f"GET {PATH}/{first['id']}", f"GET {PATH}/{body['items'][1]['id']}"
    assert [(a.request, a.outcome) for a in reads][-3:] == [(first_read, "4"), (first_read, "0"), (second_read, "0")]
    assert all(a.actor == "admin-1" for a in reads) and reads[-1].roles == ["ADMIN", "PART2"]
    assert len(reads) == 1 + 6 + 3  # the listing, the filtered listings, the three reads (not the 422)


async def test_fix_and_replay_through_the_real_pipeline(
    runtime: Runtime,
    settings: Settings,
    client: httpx.AsyncClient,
    token_for: Callable[..., str],
    db: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A decoder bug (deployed in this build) rejects a perfectly good discharge...
    assert runtime.adt_handler is not None

    def buggy_decode(payload: bytes) -> object:
        raise Hl7DecodeError("PV1-45 is not a valid timestamp (decoder bug)", "PV1-45")

    monkeypatch.setattr(runtime.adt_handler, "decode", buggy_decode)
    await produce(settings, adt().encode())
    rows = await eventually(lambda: n_rejected(db, 1))
    assert rows and rows[0].field == "PV1-45" and rows[0].status == "open"
    bad = rows[0]
    assert await count(db, Task) == 0 and await count(db, InboundEvent) == 0

    # ...the fix ships, and an admin replays the dead letter.
    monkeypatch.undo()
    admin = bearer(token_for("ADMIN", sub="admin-1"))
    resp = await client.post(f"{PATH}/{bad.id}/replay", headers=admin)
    assert resp.status_code == 200, resp.text
    result = resp.json()
    assert result["outcome"] == "applied" and result["status"] == "replayed" and result["tasks_created"] == 1
    assert result["id"] == str(bad.id) and result["tasks_cancelled"] == 0

    tasks = await tasks_over_http(client, token_for("PMC"))
    assert len(tasks) == 1 and tasks[0]["triggering_event_ids"] == [result["event_id"]]
    async with db.connect() as conn:
        event = (await conn.execute(select(InboundEvent))).one()
        row = (await conn.execute(select(RejectedEvent))).one()
        patient_id = await conn.scalar(select(Patient.id))
    # The applied event keeps the message's real broker position; the row is settled, not duplicated.
    assert str(event.id) == result["event_id"]
    assert (event.topic, event.partition, event.offset) == (bad.topic, bad.partition, bad.offset)
    assert row.status == "replayed" and row.reason == bad.reason
    assert row.resolved_by == "admin-1" and row.resolved_at is not None
    assert row.resolution == f"applied as event {result['event_id']}"
    executed = await audits(db, "E")
    assert len(executed) == 1
    assert executed[0].actor == "admin-1" and executed[0].outcome == "0"
    assert executed[0].request == f"POST {PATH}/{bad.id}/replay outcome=applied event={result['event_id']}"
    assert executed[0].patient_ids == [str(patient_id)]

    # Replaying again, or discarding, a settled row: 409, and nothing changes.
    again = await client.post(f"{PATH}/{bad.id}/replay", headers=admin)
    assert again.status_code == 409 and again.headers["content-type"] == PROBLEM
    assert again.json()["dead_letter_status"] == "replayed"
    discard = await client.post(f"{PATH}/{bad.id}/discard", json={"reason": "too late"}, headers=admin)
    assert discard.status_code == 409
    assert await count(db, Task) == 1 and await count(db, InboundEvent) == 1
    listed = (await client.get(PATH, params={"status": "replayed"}, headers=admin)).json()
    assert [i["id"] for i in listed["items"]] == [str(bad.id)]
    # The dead letter now decodes, so reading it audits the patient it names.
    await client.get(f"{PATH}/{bad.id}", headers=admin)
    assert (await audits(db, "R"))[-1].patient_ids == [str(patient_id)]


async def test_replaying_an_already_applied_message_is_a_duplicate(
    runtime: Runtime, settings: Settings, client: httpx.AsyncClient, token_for: Callable[..., str], db: AsyncEngine
) -> None:
    message = adt().encode()
    await produce(settings, message)
    assert await eventually(lambda: tasks_over_http(client, token_for("PMC")))
    # As if an earlier build had also rejected a resend of the same message.
    row = rejected(message, offset=41)
    await insert_rejected(db, row)

    resp = await client.post(f"{PATH}/{row.id}/replay", headers=bearer(token_for("ADMIN")))
    assert resp.status_code == 200, resp.text
    assert resp.json()["outcome"] == "duplicate" and resp.json()["tasks_created"] == 0
    assert await count(db, Task) == 1 and await count(db, InboundEvent) == 1
    assert [r.status for r in await rejected_rows(db)] == ["replayed"]


async def test_replaying_a_still_bad_payload_is_409_with_the_new_reason(
    runtime: Runtime, settings: Settings, client: httpx.AsyncClient, token_for: Callable[..., str], db: AsyncEngine
) -> None:
    await produce(settings, adt(control_id="").encode())
    rows = await eventually(lambda: n_rejected(db, 1))
    assert rows
    bad = rows[0]
    # Rejected by an older build for another reason: the replay must record today's reason.
    async with db.begin() as conn:
        await conn.execute(
            update(RejectedEvent).where(RejectedEvent.id == bad.id).values(reason="stale reason", field=None)
        )
    admin = bearer(token_for("ADMIN", sub="admin-1"))

    resp = await client.post(f"{PATH}/{bad.id}/replay", headers=admin)
    assert resp.status_code == 409 and resp.headers["content-type"] == PROBLEM
    problem = resp.json()
    assert problem["field"] == "MSH-10" and "MSH-10 is required" in problem["reason"]
    assert problem["detail"] == problem["reason"] and problem["outcome"] == "rejected"
    [row] = await rejected_rows(db)  # record_rejected found the same row: no second one
    assert row.id == bad.id and row.status == "open"
    assert row.field == "MSH-10" and row.reason == problem["reason"]
    failed = await audits(db, "E")
    assert [(a.actor, a.outcome) for a in failed] == [("admin-1", "4")]
    assert failed[0].request == f"POST {PATH}/{bad.id}/replay outcome=rejected"

    # A row without a broker position: record_rejected cannot find it by position, yet no copy is left.
    loose = rejected(b"MSH|definitely not", offset=None, reason="old")
    await insert_rejected(db, loose)
    resp = await client.post(f"{PATH}/{loose.id}/replay", headers=admin)
    assert resp.status_code == 409 and resp.json()["field"]
    rows = await rejected_rows(db)
    assert sorted(str(r.id) for r in rows) == sorted([str(bad.id), str(loose.id)])
    updated = next(r for r in rows if r.id == loose.id)
    assert updated.status == "open" and updated.reason == resp.json()["reason"] != "old"
    assert await count(db, Task) == 0 and await count(db, InboundEvent) == 0


@pytest.mark.api_only
async def test_discard_needs_a_reason_and_settles_the_row(
    runtime: Runtime, client: httpx.AsyncClient, token_for: Callable[..., str], db: AsyncEngine
) -> None:
    row = rejected(b"junk", offset=7)
    await insert_rejected(db, row)
    admin = bearer(token_for("ADMIN", sub="admin-1"))
    for body in ({}, {"reason": "   "}):
        missing = await client.post(f"{PATH}/{row.id}/discard", json=body, headers=admin)
        assert missing.status_code == 422 and missing.json()["field"] == "reason", missing.text
    resp = await client.post(f"{PATH}/{row.id}/discard", json={"reason": "test message from vendor"}, headers=admin)
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "discarded" and "payload" not in resp.json()
    assert [r.status for r in await rejected_rows(db)] == ["discarded"]
    [audit] = await audits(db, "U")
    assert audit.actor == "admin-1" and audit.request.endswith("reason=test message from vendor")

    replay = await client.post(f"{PATH}/{row.id}/replay", headers=admin)
    assert replay.status_code == 409 and replay.json()["dead_letter_status"] == "discarded"
    again = await client.post(f"{PATH}/{row.id}/discard", json={"reason": "twice"}, headers=admin)
    assert again.status_code == 409


@pytest.mark.api_only
async def test_only_admin_roles_get_in(
    runtime: Runtime, client: httpx.AsyncClient, token_for: Callable[..., str], db: AsyncEngine
) -> None:
    row = rejected(adt().encode(), offset=3)
    await insert_rejected(db, row)
    calls = [
        ("GET", PATH, None),
        ("GET", f"{PATH}/{row.id}", None),
        ("POST", f"{PATH}/{row.id}/replay", None),
        ("POST", f"{PATH}/{row.id}/discard", {"reason": "x"}),
    ]
    for method, url, body in calls:
        anonymous = await client.request(method, url, json=body)
        assert anonymous.status_code == 401 and anonymous.headers["content-type"] == PROBLEM, url
        pmc = await client.request(method, url, json=body, headers=bearer(token_for("PMC")))
        assert pmc.status_code == 403 and pmc.headers["content-type"] == PROBLEM, url
    # Nothing was replayed, discarded or audited for the refused callers.
    assert [r.status for r in await rejected_rows(db)] == ["open"]
    assert await count(db, Task) == 0 and await count(db, AuditEvent) == 0

    admin = bearer(token_for("ADMIN"))
    unknown = uuid.uuid4()
    for method, url, body in (
        ("GET", f"{PATH}/{unknown}", None),
        ("POST", f"{PATH}/{unknown}/replay", None),
        ("POST", f"{PATH}/{unknown}/discard", {"reason": "x"}),
    ):
        missing = await client.request(method, url, json=body, headers=admin)
        assert missing.status_code == 404 and missing.headers["content-type"] == PROBLEM, url
    assert (await client.get(f"{PATH}/not-a-uuid", headers=admin)).status_code == 422

    # The roles come from CARECOORD_ADMIN_ROLES.
    ops_settings = runtime.settings.model_copy(update={"admin_roles": ["OPS"]})
    ops_app = create_app(settings=ops_settings, runtime=runtime)
    transport = httpx.ASGITransport(app=ops_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://carecoord.test") as ops_client:
        assert (await ops_client.get(PATH, headers=bearer(token_for("OPS")))).status_code == 200
        assert (await ops_client.get(PATH, headers=admin)).status_code == 403


@pytest.mark.api_only
async def test_pagination_by_cursor_and_offset(
    runtime: Runtime, client: httpx.AsyncClient, token_for: Callable[..., str], db: AsyncEngine
) -> None:
    base = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    rows = [rejected(f"junk {i}".encode(), offset=i, created_at=base + timedelta(minutes=i)) for i in range(7)]
    # Two rows share a timestamp: the id breaks the tie, so no page skips or repeats one.
    rows.append(rejected(b"junk tie", offset=100, created_at=base + timedelta(minutes=3)))
    rows.append(rejected(b"junk done", offset=101, created_at=base + timedelta(minutes=9), status="discarded"))
    await insert_rejected(db, *rows)
    admin = bearer(token_for("ADMIN"))
    open_rows = [r for r in rows if r.status == "open"]
    expected = [str(r.id) for r in sorted(open_rows, key=lambda r: (r.created_at, str(r.id)), reverse=True)]

    seen: list[str] = []
    cursor: str | None = None
    cursors: list[str] = []
    pages = 0
    while True:
        params: dict[str, str | int] = {"status": "open", "limit": 3}
        if cursor:
            params["cursor"] = cursor
        resp = await client.get(PATH, params=params, headers=admin)
        assert resp.status_code == 200, resp.text
        page = resp.json()
        assert page["total"] == 8 and page["count"] == len(page["items"]) <= 3
        seen += [i["id"] for i in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        cursors.append(cursor)
    assert pages == 3 and seen == expected

    by_offset = (await client.get(PATH, params={"status": "open", "limit": 3, "offset": 3}, headers=admin)).json()
    assert [i["id"] for i in by_offset["items"]] == expected[3:6] and by_offset["next_cursor"] is not None
    last = (await client.get(PATH, params={"status": "open", "limit": 3, "offset": 6}, headers=admin)).json()
    assert [i["id"] for i in last["items"]] == expected[6:] and last["next_cursor"] is None
    everything = (await client.get(PATH, headers=admin)).json()
    assert everything["total"] == 9 and everything["items"][0]["status"] == "discarded"

    invalid: list[dict[str, str | int]] = [
        {"limit": 501},
        {"limit": 0},
        {"offset": -1},
        {"cursor": "bm9wZQ"},
        {"cursor": cursors[0], "offset": 2},
    ]
    for params in invalid:
        resp = await client.get(PATH, params=params, headers=admin)
        assert resp.status_code == 422 and resp.headers["content-type"] == PROBLEM, params


async def test_a_da_vinci_dead_letter_replays_through_the_ens_handler(
    runtime: Runtime, client: httpx.AsyncClient, token_for: Callable[..., str], db: AsyncEngine
) -> None:
    bundle = (SAMPLES / "davinci-discharge-notification-message-bundle-01.json").read_bytes()
    row = rejected(bundle, offset=7, source="davinci", topic="ens-earlier")
    await insert_rejected(db, row)

    resp = await client.post(f"{PATH}/{row.id}/replay", headers=bearer(token_for("ADMIN")))
    assert resp.status_code == 200, resp.text
    assert resp.json()["outcome"] == "applied"
    assert await count(db, InboundEvent) == 1
    async with db.connect() as conn:
        source = await conn.scalar(select(InboundEvent.source))
    assert source == "davinci"
    assert [r.status for r in await rejected_rows(db)] == ["replayed"]


async def test_the_listed_reason_quotes_no_field_values(
    runtime: Runtime, settings: Settings, client: httpx.AsyncClient, token_for: Callable[..., str], db: AsyncEngine
) -> None:
    """The decoder words the error with the bad birth date in it; the stored, listed and replayed reason
    names the field only. The values stay in the payload, for an admin who may read it."""
    name, mrn, birth = "ZWIRBELHOFER", "MRN-QX7731", "19800231"
    poison = adt(family=name, given="QUENTINA", mrn=mrn, birth_date=birth).encode()
    await produce(settings, poison, key=b"poison")
    assert await eventually(lambda: n_rejected(db, 1))
    admin = bearer(token_for("ADMIN", sub="admin-1"))
    listing = await client.get(PATH, headers=admin)
    assert listing.status_code == 200, listing.text
    [item] = listing.json()["items"]
    assert item["field"] == "PID-7" and item["reason"].startswith("PID-7: "), item
    replayed = await client.post(f"{PATH}/{item['id']}/replay", headers=admin)
    assert replayed.status_code == 409, replayed.text
    for text in (listing.text, replayed.text):
        assert not [v for v in (name, mrn, birth, "QUENTINA") if v in text], text
    holder = bearer(token_for("ADMIN", "PART2", sub="admin-2"))
    detail = await client.get(f"{PATH}/{item['id']}", headers=holder)
    assert detail.status_code == 200, detail.text
    body = detail.json()
    assert all(v in body["payload"] for v in (name, mrn, birth)) and birth not in body["reason"]


def test_value_free_reason_withholds_quoted_and_payload_values() -> None:
    payload = adt(family="ZWIRBELHOFER", mrn="MRN-QX7731").encode()
    reason = "PID-5: ZWIRBELHOFER is too long; PID-3 MRN-QX7731 unknown; input_value=42 'x'"
    cleaned = value_free_reason(reason, payload)
    assert "ZWIRBELHOFER" not in cleaned and "MRN-QX7731" not in cleaned and "42" not in cleaned
    assert cleaned.startswith("PID-5: ") and "PID-3" in cleaned
    fhir = b'{"resourceType": "Patient", "birthDate": "1980-02-31", "name": [{"family": "Okonkwo-Ruiz"}]}'
    assert value_free_reason("birthDate 1980-02-31 of Okonkwo-Ruiz", fhir) == (
        "birthDate (value withheld) of (value withheld)"
    )
