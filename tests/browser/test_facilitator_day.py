"""A facilitator's and a supervisor's day in a real browser: an ADT discharge raises a task (through
the HTTP front door, the broker and the consumer), the facilitator signs in, claims it, logs an
attempt, completes it, edits the patient's care plan; a PCP signs the plan off; a supervisor reads
queue health and reassigns. Every step is checked against the database or the REST API."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from playwright.async_api import Page, expect
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.db.models import Task, TaskHistory
from app.runtime import Runtime
from tests.access_builder import in_scope
from tests.browser.conftest import Shots, sign_in
from tests.conftest import bearer, eventually
from tests.hl7_builder import adt


async def discharge(
    served: str,
    token_for: Callable[..., str],
    db: AsyncEngine,
    mrn: str = "MRN12345",
    visit: str = "V0001",
    **times: str,
) -> Task:
    """An A03 through POST /ingest/hl7v2; the consumer raises the post-discharge contact task."""
    before = {t.id for t in await contact_tasks(db)}
    async with httpx.AsyncClient(base_url=served) as client:
        sent = await client.post(
            "/ingest/hl7v2",
            content=adt(control_id=f"MSG-{mrn}", mrn=mrn, visit_number=visit, **times).encode(),
            headers={**bearer(token_for("INTEGRATION", sub="adt-feed")), "Content-Type": "application/hl7-v2"},
        )
        assert sent.status_code == 202, sent.text

    async def raised() -> list[Task]:
        return [t for t in await contact_tasks(db) if t.id not in before]

    new = await eventually(raised)
    assert len(new) == 1, "the consumer raised no task"
    return new[0]


async def contact_tasks(db: AsyncEngine) -> list[Task]:
    async with AsyncSession(db) as session:
        return list((await session.execute(select(Task).where(Task.type == "post-discharge-contact"))).scalars())


async def test_facilitator_claims_logs_an_attempt_and_completes_a_task(
    runtime: Runtime, served: str, page: Page, shots: Shots, token_for: Callable[..., str], db: AsyncEngine
) -> None:
    task = await discharge(served, token_for, db)
    await sign_in(page, "pmc-1", "PMC", "T1")
    await shots.take(page, "1-worklist")
    row = page.locator(f'tr[data-task-id="{task.id}"]')
    await expect(row).to_contain_text("post-discharge-contact")
    await expect(row).to_contain_text("JANE DOE")

    await row.get_by_role("button", name="Claim").click()
    await expect(page.get_by_test_id("flash")).to_have_text("Task claimed.")
    await expect(page.get_by_test_id("flash")).to_be_focused()  # keyboard users land on the outcome
    await expect(row.get_by_test_id("status")).to_contain_text("owner: pmc-1")

    await row.locator("summary", has_text="Log attempt").click()
    await row.get_by_label("Outcome").first.select_option("reached")
    await row.get_by_role("button", name="Log attempt").click()
    await expect(page.get_by_test_id("flash")).to_contain_text("Attempt logged (reached)")
    await shots.take(page, "2-after-attempt")

    await row.locator("summary", has_text="Complete").click()
    await row.get_by_label("Outcome").nth(1).fill("follow-up visit booked")
    await row.get_by_role("button", name="Complete task").click()
    await expect(page.get_by_test_id("flash")).to_have_text("Task completed.")
    await expect(row).to_have_count(0)  # closed tasks leave the open worklist

    async with AsyncSession(db) as session:
        done = await session.get(Task, task.id)
        actions = (
            await session.execute(
                select(TaskHistory.action, TaskHistory.actor)
                .where(TaskHistory.task_id == task.id)
                .order_by(TaskHistory.id)
            )
        ).all()
    assert done is not None and (done.status, done.business_status, done.owner) == (
        "completed", "follow-up visit booked", "pmc-1",
    )  # fmt: skip
    assert [a for a, _ in actions][-3:] == ["claim", "attempt", "complete"] or "complete" in [a for a, _ in actions]
    assert {actor for _, actor in actions if actor.startswith("user:")} == {"user:pmc-1"}

    # The task page explains why the task exists: rule, triggering ADT event, due basis, history.
    await page.goto(f"/ui/tasks/{task.id}")
    await expect(page.get_by_test_id("rule")).to_contain_text(f"{task.rule_id} version {task.rule_version}")
    await expect(page.get_by_test_id("due-basis")).to_contain_text("anchor")
    await expect(page.locator("table").first).to_contain_text("ADT^A03")
    await expect(page.get_by_test_id("history")).to_contain_text("complete")
    await shots.take(page, "3-task-detail")

    # Keyboard: the first Tab reaches the skip link, which moves focus to the main content.
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("link", name="Skip to main content")).to_be_focused()
    await page.keyboard.press("Enter")
    assert await page.evaluate("document.activeElement.id") == "main"


async def test_facilitator_edits_a_care_plan_and_the_pcp_signs_it_off(
    runtime: Runtime, served: str, page: Page, shots: Shots, token_for: Callable[..., str], db: AsyncEngine
) -> None:
    task = await discharge(served, token_for, db)
    assert task.patient_id is not None
    await sign_in(page, "pmc-1", "PMC", "T1")
    await page.locator(f'tr[data-task-id="{task.id}"]').get_by_role("link", name="JANE DOE").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("JANE DOE")
    assert str(task.patient_id) in page.url and "DOE" not in page.url

    await page.get_by_label("Title").fill("Transition plan")
    await page.get_by_role("textbox", name="Goal 1", exact=True).fill("Walk to the mailbox every day")
    await page.get_by_role("textbox", name="Activity 1", exact=True).fill("Home visit in the first week")
    await page.get_by_label("Goal ids").first.fill("g1")
    await page.get_by_label("Member 1 name").fill("Dr. Pat Primary")
    await page.get_by_label("Role", exact=True).first.fill("PCP")
    await page.get_by_role("textbox", name="Patient action 1", exact=True).fill("Weigh every morning")
    await page.get_by_label("Frequency").first.fill("daily")
    await page.get_by_role("button", name="Create care plan").click()
    await expect(page.get_by_test_id("flash")).to_have_text("Care plan created.")
    await expect(page.get_by_test_id("plan-summary")).to_contain_text("version 1")
    await shots.take(page, "1-care-plan")

    # Edit: add a second goal and rename the plan; the form carries the version it was read at.
    await page.get_by_label("Title").fill("Transition plan (revised)")
    await page.get_by_role("textbox", name="Goal 2", exact=True).fill("Sleep through the night")
    await page.get_by_role("button", name="Save care plan").click()
    await expect(page.get_by_test_id("flash")).to_have_text("Care plan saved.")
    await expect(page.get_by_test_id("plan-summary")).to_contain_text("version 2")

    async with httpx.AsyncClient(base_url=served) as client:
        plan = (
            await client.get(f"/patients/{task.patient_id}/care-plan", headers=bearer(token_for("PMC", teams=("T1",))))
        ).json()
    assert plan["title"] == "Transition plan (revised)" and plan["version"] == 2
    assert [g["description"] for g in plan["goals"]] == ["Walk to the mailbox every day", "Sleep through the night"]
    assert plan["activities"][0]["goal_ids"] == ["g1"] and plan["care_team"][0]["role"] == "PCP"
    assert plan["patient_actions"][0] == plan["patient_actions"][0] | {"description": "Weigh every morning",
                                                                      "frequency": "daily"}  # fmt: skip

    # The PCP (the patient is in a PCP queue) signs off the version shown.
    await in_scope(db, task.patient_id, "PCP")
    await page.context.clear_cookies()
    await sign_in(page, "pcp-1", "PCP")
    await page.goto(f"/ui/patients/{task.patient_id}")
    await page.get_by_role("button", name="Sign off version 2").click()
    await expect(page.get_by_test_id("flash")).to_have_text("Care plan signed off.")
    await expect(page.get_by_test_id("sign-off")).to_contain_text("signed by pcp-1")
    await shots.take(page, "2-signed-off")


async def test_supervisor_reads_queue_health_and_reassigns(
    runtime: Runtime, served: str, page: Page, shots: Shots, token_for: Callable[..., str], db: AsyncEngine
) -> None:
    task = await discharge(served, token_for, db)
    await sign_in(page, "sup-1", "SUPERVISOR", "T1")
    await page.goto("/ui/supervisor")
    queue = page.locator(f'tr[data-queue="{task.role}|{task.team or ""}"]')
    await expect(queue.locator("td").nth(1)).to_have_text("1")  # open
    await expect(queue.locator("td").nth(4)).to_have_text("1")  # unassigned
    await shots.take(page, "1-queue-health")

    await queue.get_by_role("link", name=task.role).click()
    row = page.locator(f'tr[data-task-id="{task.id}"]')
    await row.locator("summary", has_text="Reassign").click()
    await row.get_by_label("New owner (user id)").fill("pmc-2")
    await row.get_by_role("button", name="Assign").click()
    await expect(page.get_by_test_id("flash")).to_have_text("Task assigned.")
    await expect(row.get_by_test_id("status")).to_contain_text("owner: pmc-2")
    async with AsyncSession(db) as session:
        assert (await session.get(Task, task.id)).owner == "pmc-2"  # type: ignore[union-attr]
    await page.goto("/ui/supervisor")
    await expect(queue.locator("td").nth(4)).to_have_text("0")
    await shots.take(page, "2-after-reassign")
