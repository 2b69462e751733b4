"""Every front door: a leading UTF-8 byte-order mark is stripped; the documented size limit
(CARECOORD_INGEST_MAX_BYTES) is accepted at exactly the limit; anything over it, or more than the broker
takes, is refused permanently (HTTP 413, MLLP AR with ERR-3 104), never with a retry answer."""

from __future__ import annotations

import asyncio
import codecs
from collections.abc import Callable
from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api.app import create_app
from app.db.models import InboundEvent, RosterMember
from app.inbox.watcher import InboxWatcher
from app.ingest.mllp import MllpServer
from app.runtime import Runtime
from app.settings import Settings
from tests.conftest import bearer
from tests.hl7_builder import adt
from tests.integration.test_adt_pipeline import produce
from tests.integration.test_adt_semantics import rows, settle
from tests.integration.test_inbox_watcher import MONDAY, count
from tests.integration.test_mllp import err, msa, records_on, send_blocking
from tests.roster_builder import csv_text, make_importer, member

BOM = codecs.BOM_UTF8


def padded(control_id: str, size: int) -> bytes:
    """A valid A03 of exactly `size` bytes (a note segment carries the padding)."""
    base = adt(control_id=control_id).encode() + b"NTE|1||"
    return base + b"x" * (size - len(base) - 1) + b"\r"


def ingest(client: httpx.AsyncClient, token: str, body: bytes) -> object:
    return client.post("/ingest/hl7v2", content=body, headers={**bearer(token), "Content-Type": "text/plain"})


async def applied_ids(db: AsyncEngine) -> set[str]:
    return {e.message_identity.rsplit("|", 1)[-1] for e in await rows(db, InboundEvent)}


# -- byte-order mark -----------------------------------------------------------------------------------


async def test_a_bom_prefixed_message_is_applied_over_http_mllp_and_kafka(
    runtime: Runtime, settings: Settings, client: httpx.AsyncClient, token_for: Callable[..., str], db: AsyncEngine
) -> None:
    resp = await ingest(client, token_for("INTEGRATION"), BOM + adt(control_id="BOM-HTTP").encode())
    assert resp.status_code == 202, resp.text
    async with MllpServer(runtime, host="127.0.0.1", port=0) as server:
        ack = await asyncio.to_thread(send_blocking, server.port, BOM + adt(control_id="BOM-MLLP").encode())
    assert msa(ack) == ("AA", "BOM-MLLP")
    await produce(settings, BOM + adt(control_id="BOM-KAFKA", mrn="MRN-K").encode(), key=b"k")
    await settle(db, 3)
    assert await applied_ids(db) == {"BOM-HTTP", "BOM-MLLP", "BOM-KAFKA"}


async def test_a_bom_prefixed_roster_file_in_the_inbox_is_imported(db: AsyncEngine, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "acme_20261103.csv").write_bytes(BOM + csv_text([member(1), member(2)]).encode())
    watcher = InboxWatcher(inbox, make_importer(db, tmp_path, inbox_settle_s=0))
    [outcome] = await watcher.poll_once(MONDAY)
    assert outcome.status == "completed" and outcome.added == 2, outcome.reason
    assert await count(db, RosterMember) == 2


# -- size limit -------------------------------------------------------------------------------------------


async def test_exactly_the_limit_is_accepted_and_applied_one_byte_more_is_413(
    runtime: Runtime, client: httpx.AsyncClient, token_for: Callable[..., str], db: AsyncEngine
) -> None:
    limit = runtime.settings.ingest_max_bytes
    token = token_for("INTEGRATION")
    exact = padded("AT-LIMIT", limit)
    assert len(exact) == limit
    resp = await ingest(client, token, exact)
    assert resp.status_code == 202, resp.text
    over = await ingest(client, token, padded("OVER-LIMIT", limit + 1))
    assert over.status_code == 413 and "Retry-After" not in over.headers
    await settle(db, 1)
    assert await applied_ids(db) == {"AT-LIMIT"}


async def test_mllp_takes_exactly_the_limit(runtime: Runtime, db: AsyncEngine) -> None:
    limit = runtime.settings.ingest_max_bytes
    async with MllpServer(runtime, host="127.0.0.1", port=0) as server:
        ack = await asyncio.to_thread(send_blocking, server.port, padded("MLLP-LIMIT", limit))
    assert msa(ack) == ("AA", "MLLP-LIMIT")
    await settle(db, 1)


async def test_a_message_the_broker_cannot_take_is_refused_permanently(
    settings: Settings, db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    # The cluster takes 4 KiB records (CARECOORD_KAFKA_MAX_MESSAGE_BYTES); the ingest limit is 1 MiB.
    small = settings.model_copy(update={"kafka_max_message_bytes": 4096})
    message = padded("TOO-BIG-FOR-BROKER", 16 * 1024)
    async with Runtime(small, run_consumers=False) as rt:
        app = create_app(runtime=rt)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            resp = await ingest(client, token_for("INTEGRATION"), message)
        assert resp.status_code == 413, resp.text  # not 503 + Retry-After: a resend is just as large
        assert "Retry-After" not in resp.headers
        async with MllpServer(rt, host="127.0.0.1", port=0) as server:
            ack = await asyncio.to_thread(send_blocking, server.port, message)
            small_ack = await asyncio.to_thread(send_blocking, server.port, adt(control_id="FITS"))
        assert msa(ack) == ("AR", "TOO-BIG-FOR-BROKER")
        assert str(err(ack)(3)(1)(1)) == "104"  # value too long, not 207 "resend it unchanged"
        assert msa(small_ack) == ("AA", "FITS")
        assert await records_on(small, small.topics.adt) == 1
