"""Browser tests: the app on a real uvicorn server (real broker and database, tests/conftest.py) driven
by Playwright for Python through Debian's chromium at /usr/bin/chromium. No browser is downloaded:
`.ci/run` installs the distribution's chromium when it is missing. Screenshots of every page a test
looks at are saved under test-artifacts/browser/ (gitignored) at 1280x800 and at tablet width (768)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.integration.test_fhir_tasks import served  # noqa: F401 - the real-server fixture, shared

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
DESKTOP = {"width": 1280, "height": 800}
TABLET = {"width": 768, "height": 1024}


def _require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    _require_chromium()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@dataclass
class Shots:
    """Saves a page at desktop and tablet width, named after the test and the step."""

    test: str

    async def take(self, page: Page, step: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        before = page.viewport_size
        for name, size in (("1280x800", DESKTOP), ("768", TABLET)):
            await page.set_viewport_size(size)
            await page.screenshot(path=str(ARTIFACTS / f"{self.test}--{step}--{name}.png"), full_page=True)
            assert not await _scrolls_sideways(page), f"{step} scrolls sideways at {name}"
        if before:
            await page.set_viewport_size(before)


async def _scrolls_sideways(page: Page) -> bool:
    return bool(await page.evaluate("document.documentElement.scrollWidth > window.innerWidth + 1"))


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Shots:
    return Shots(re.sub(r"[^A-Za-z0-9_-]", "_", request.node.name))


@pytest.fixture
async def page(browser: Browser, served: str) -> AsyncIterator[Page]:  # noqa: F811
    context = await browser.new_context(base_url=served, viewport=DESKTOP)
    opened = await context.new_page()
    yield opened
    await context.close()


async def sign_in(page: Page, user: str, roles: str, teams: str = "") -> None:
    """The development sign-in form, as a person fills it in."""
    await page.goto("/ui/worklist")  # signed out: redirected to the form
    assert page.url.endswith("/ui/sign-in")
    await page.get_by_label("User (token subject)").fill(user)
    await page.get_by_label("Roles").fill(roles)
    await page.get_by_label("Teams (practices)").fill(teams)
    await page.locator("#dev-heading + p + form").get_by_role("button", name="Sign in").click()
    await page.wait_for_url("**/ui/worklist")
