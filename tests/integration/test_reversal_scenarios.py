"""Reversals end to end (ADT on the broker -> consumer -> database -> task API): a cancelled follow-up
visit reopens the contact it completed, a cancelled readmission reopens the work it superseded, and a
visit cancelled before the discharge arrives is no evidence."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from app.runtime import Runtime
from tests.conftest import bearer
from tests.hl7_builder import adt
from tests.integration.test_rules_scenarios import FACILITATORS, by_type, send, service, shipped, tasks

__all__ = ["service", "shipped"]  # fixtures shared with the rules scenarios

OFFICE = dict(patient_class="O", event_time="20261118090000-0500", admit_time="20261118090000-0500")


async def history(client: httpx.AsyncClient, token: str, task_id: str) -> list[dict]:
    resp = await client.get(f"/tasks/{task_id}/explain", headers=bearer(token))
    assert resp.status_code == 200, resp.text
    return resp.json()["history"]


async def test_cancelled_follow_up_visit_reopens_the_contact(
    service: tuple[Runtime, httpx.AsyncClient], db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    runtime, client = service
    await send(
        runtime,
        db,
        adt("A03", control_id="A03", visit_number="V1", discharge_time="20261116100000-0500"),
        adt("A04", control_id="A04", visit_number="V2", **OFFICE),
    )
    [contact] = by_type(await tasks(client, token_for(*FACILITATORS)))["post-discharge-contact"]
    assert contact["status"] == "completed"
    await send(runtime, db, adt("A11", control_id="A11", visit_number="V2", patient_class="O"))
    [contact] = by_type(await tasks(client, token_for(*FACILITATORS)))["post-discharge-contact"]
    assert contact["status"] == "ready"
    steps = await history(client, token_for("PMC"), contact["id"])
    assert [(h["action"], h["to_status"]) for h in steps] == [
        ("created", "ready"),
        ("completed", "completed"),
        ("reopened", "ready"),
    ]
    assert steps[-1]["actor"] == "event:ADT^A11" and "cancelled" in steps[-1]["detail"]["reason"]
    # A later office visit completes it again.
    again = dict(OFFICE, event_time="20261119090000-0500", admit_time="20261119090000-0500")
    await send(runtime, db, adt("A04", control_id="A04b", visit_number="V3", **again))
    [contact] = by_type(await tasks(client, token_for(*FACILITATORS)))["post-discharge-contact"]
    assert contact["status"] == "completed"


async def test_cancelled_readmission_reopens_the_superseded_work(
    service: tuple[Runtime, httpx.AsyncClient], db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    runtime, client = service
    readmit = dict(event_time="20261119090000-0500", admit_time="20261119090000-0500")
    await send(
        runtime,
        db,
        adt("A03", control_id="A03", visit_number="V1", discharge_time="20261116100000-0500"),
        adt("A01", control_id="A01b", visit_number="V2", **readmit),
    )
    found = by_type(await tasks(client, token_for(*FACILITATORS)))
    assert {t["status"] for t in found["post-discharge-contact"] + found["medication-reconciliation"]} == {"cancelled"}
    await send(runtime, db, adt("A11", control_id="A11b", visit_number="V2", event_time="20261119100000-0500"))
    found = by_type(await tasks(client, token_for(*FACILITATORS)))
    assert [t["status"] for t in found["post-discharge-contact"]] == ["ready"]
    assert [t["status"] for t in found["medication-reconciliation"]] == ["ready"]
    assert [t["status"] for t in found["admission-notification"]] == ["cancelled"]  # the stay never was
    steps = await history(client, token_for("PMC"), found["post-discharge-contact"][0]["id"])
    assert [h["action"] for h in steps] == ["created", "cancelled", "reopened"]
    assert "readmission" in steps[-1]["detail"]["reason"]
    explained = (
        await client.get(f"/tasks/{found['post-discharge-contact'][0]['id']}/explain", headers=bearer(token_for("PMC")))
    ).json()
    assert explained["superseded_by_encounter_id"] is None


async def test_a_visit_cancelled_before_the_discharge_arrives_is_no_evidence(
    service: tuple[Runtime, httpx.AsyncClient], db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    runtime, client = service
    await send(
        runtime,
        db,
        adt("A04", control_id="A04", visit_number="V2", **OFFICE),
        adt("A11", control_id="A11", visit_number="V2", patient_class="O", event_time="20261118100000-0500"),
        adt("A03", control_id="A03", visit_number="V1", discharge_time="20261116100000-0500"),
    )
    [contact] = by_type(await tasks(client, token_for(*FACILITATORS)))["post-discharge-contact"]
    assert contact["status"] == "ready"
