"""42 CFR Part 2 leaks found by the outside review (issue 19, section 3): Part 2 data stays invisible
to callers without the permission in explain answers too, not only in reads."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import utcnow
from app.runtime import Runtime
from tests.conftest import bearer
from tests.hl7_builder import adt
from tests.integration.test_rules_scenarios import FACILITATORS, by_type, send, service, shipped, tasks

__all__ = ["service", "shipped"]


def hl7_at(days_ago: float) -> str:
    """An HL7 v2 timestamp `days_ago` before the test's own now."""
    return (utcnow() - timedelta(days=days_ago)).strftime("%Y%m%d%H%M%S+0000")


async def test_explain_of_a_task_superseded_by_a_part2_readmission_is_neutral(
    service: tuple[Runtime, httpx.AsyncClient],
    db: AsyncEngine,
    token_for: Callable[..., str],
) -> None:
    runtime, client = service
    await send(
        runtime,
        db,
        adt("A03", control_id="P2L-A03", visit_number="V1", admit_time=hl7_at(6), discharge_time=hl7_at(4)),
        adt(
            "A01",
            control_id="P2L-A01",
            visit_number="V2",
            event_time=hl7_at(1),
            admit_time=hl7_at(1),
            diagnoses=(("F10.20", "I10"),),  # the readmission is a substance-use stay: Part 2
        ),
    )
    pmc = token_for("PMC")
    contacts = by_type(await tasks(client, token_for(*FACILITATORS)))["post-discharge-contact"]
    assert [t["status"] for t in contacts] == ["cancelled"], contacts  # superseded; the Part 2 stay's own is hidden
    old = await client.get(f"/tasks/{contacts[0]['id']}/explain", headers=bearer(pmc))
    assert old.status_code == 200, old.text
    body = old.json()
    assert body["superseded_by_encounter_id"] is None
    assert "readmission" not in old.text.lower() and "P2L-A01" not in old.text
    assert body["history"][-1]["detail"] == {"reason": "closed by a later encounter"}
    # A caller who may see the Part 2 stay (permission and consent) still gets the full reason.
    holder = token_for("PMC", "PART2", sub="sud-holder")
    patient = contacts[0]["patient"]["id"]
    supervisor = token_for("SUPERVISOR", sub="sup-p2l")
    assert (await client.post(f"/patients/{patient}/consents", json={}, headers=bearer(supervisor))).status_code == 201
    full = (await client.get(f"/tasks/{contacts[0]['id']}/explain", headers=bearer(holder))).json()
    assert full["superseded_by_encounter_id"] is not None
    assert full["history"][-1]["detail"]["reason"].startswith("superseded by readmission")
