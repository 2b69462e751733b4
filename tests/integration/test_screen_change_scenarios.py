"""Screens that change, end to end (FHIR Observations through the front door -> broker -> consumer ->
database -> task API): an amended PHQ-9 that turns negative cancels its referral; a PHQ-9 entered in
error hands the referral to the patient's remaining positive screen."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.settings import Settings
from tests.conftest import eventually
from tests.fhir_builder import MRN_SYSTEM, observation
from tests.integration.test_referral_loop_scenarios import post_fhir
from tests.integration.test_rules_scenarios import FACILITATORS, _running, by_type, local, shipped, tasks

__all__ = ["shipped"]  # the fixture, shared with the rules scenarios


@pytest.fixture
async def api(shipped: Settings, db: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    settings = shipped.model_copy(update={"assigning_authority_systems": {"GOODHEALTH": MRN_SYSTEM}})
    async with _running(settings) as (_runtime, http):
        yield http


async def referrals(client: httpx.AsyncClient, token: str, statuses: list[str]) -> list[dict] | None:
    found = sorted(by_type(await tasks(client, token)).get("bh-referral", []), key=lambda t: t["created_at"])
    return found if [t["status"] for t in found] == statuses else None


async def test_an_amended_screen_that_turns_negative_cancels_its_referral(
    api: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    client, feed, staff = api, token_for("INTEGRATION", sub="ehr"), token_for(*FACILITATORS)
    await post_fhir(client, feed, observation(mrn="AMEND", ident="PHQ9-A"))  # 14: positive
    assert await eventually(lambda: referrals(client, staff, ["ready"]))
    await post_fhir(client, feed, observation(mrn="AMEND", ident="PHQ9-A", status="amended", value={"valueInteger": 6}))
    [cancelled] = await eventually(lambda: referrals(client, staff, ["cancelled"])) or [None]
    assert cancelled is not None, "the amended negative screen left the referral open"


async def test_a_retracted_screen_hands_the_referral_to_the_remaining_positive_screen(
    api: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    client, feed, staff = api, token_for("INTEGRATION", sub="ehr"), token_for(*FACILITATORS)
    await post_fhir(client, feed, observation(mrn="RETRACT", ident="PHQ9-R"))
    assert await eventually(lambda: referrals(client, staff, ["ready"]))
    gad7 = observation(
        "70274-6", mrn="RETRACT", ident="GAD7-R", value={"valueInteger": 15}, effective="2026-11-21T09:00:00-05:00"
    )
    await post_fhir(client, feed, gad7)  # positive, but a referral is open: stands down
    await post_fhir(client, feed, observation(mrn="RETRACT", ident="PHQ9-R", status="entered-in-error"))
    found = await eventually(lambda: referrals(client, staff, ["cancelled", "ready"]))
    assert found is not None, "the retraction did not re-run the referral rule on the GAD-7"
    assert local(found[1]["due_at"]) == "Tue 2026-11-24 09:00"  # 3 days from the GAD-7
    assert found[1]["business_status"] == "requested"
