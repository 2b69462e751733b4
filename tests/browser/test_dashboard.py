"""The quality dashboard in a real browser for a seeded scenario: two discharges through the HTTP front
door, one contacted (completed in the UI) within 7 days, one whose 7-day window closed uncontacted.
The 7-day contact chart shows 1 of 2 (50%), the numerator drills down to the contacted patient only,
and every number on the page equals what GET /measures answers the same caller for the same period."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
from playwright.async_api import Page, expect
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import utcnow
from app.runtime import Runtime
from tests.browser.conftest import Shots, sign_in
from tests.browser.test_facilitator_day import discharge
from tests.hl7_builder import stay_ended

CONTACT = "post-discharge-contact-7d"


async def test_dashboard_shows_the_seeded_numbers_and_drills_down(
    runtime: Runtime, served: str, page: Page, shots: Shots, token_for: Callable[..., str], db: AsyncEngine
) -> None:
    # Discharged two days ago: contacted today, within its 7 days.
    contacted = await discharge(served, token_for, db, mrn="MRN-A", **stay_ended(2))
    # Discharged twelve days ago: its 7-day window has closed uncontacted (a window still open would
    # leave it pending, out of the denominator). Both discharges are inside the page's 30-day period.
    other = await discharge(served, token_for, db, mrn="MRN-B", visit="V0002", **stay_ended(12))
    assert other.patient_id != contacted.patient_id
    await sign_in(page, "sup-1", "SUPERVISOR", "T1")
    await page.goto(f"/ui/tasks/{contacted.id}")
    await page.locator("summary", has_text="Complete").click()
    await page.get_by_label("Outcome").nth(1).fill("reached, visit booked")
    await page.get_by_role("button", name="Complete task").click()
    await expect(page.get_by_test_id("flash")).to_have_text("Task completed.")

    await page.goto("/ui/dashboard")
    card = page.locator(f'section[data-measure="{CONTACT}"]')
    await expect(card.get_by_test_id("numerator")).to_have_text("1")
    await expect(card.get_by_test_id("denominator")).to_have_text("2")
    await expect(card.get_by_test_id("rate")).to_contain_text("50.0% (target 50%: met)")
    await expect(card.locator("svg")).to_have_count(1)
    assert await card.locator("svg").get_attribute("role") == "img"
    await shots.take(page, "1-dashboard")

    # Every card equals what GET /measures answers the same caller for the page's default period.
    today = utcnow().astimezone(ZoneInfo(runtime.settings.facility_timezone)).date()
    token = _cookie_token(await page.context.cookies())
    period = {"period_start": str(today - timedelta(days=29)), "period_end": str(today)}
    async with httpx.AsyncClient(base_url=served) as api:
        answer = await api.get("/measures", params=period, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    expected = answer.json()["measures"]
    assert any(m["key"] == CONTACT and (m["numerator"], m["denominator"]) == (1, 2) for m in expected)
    for result in expected:
        shown = page.locator(f'section[data-measure="{result["key"]}"]')
        await expect(shown.get_by_test_id("numerator")).to_have_text(str(result["numerator"]))
        await expect(shown.get_by_test_id("denominator")).to_have_text(str(result["denominator"]))

    await card.get_by_test_id("numerator").click()
    await expect(page.get_by_test_id("drill-down").locator("tbody tr")).to_have_count(1)
    await expect(page.get_by_test_id("drill-down")).to_contain_text("JANE DOE")
    assert str(contacted.patient_id) in await page.get_by_test_id("drill-down").inner_html()
    await shots.take(page, "2-drill-down")
    async with page.expect_download() as download:
        await page.get_by_test_id("patients-csv").click()
    csv_text = Path(await (await download.value).path()).read_text(encoding="utf-8")  # noqa: ASYNC240
    assert csv_text.splitlines()[0].startswith("patient_id") and str(contacted.patient_id) in csv_text


def _cookie_token(cookies: list) -> str:  # type: ignore[type-arg]
    return next(c["value"] for c in cookies if c["name"] == "carecoord_session")
