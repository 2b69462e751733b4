"""GET /tasks/{id}/explain is complete for every kind of task: a screening-raised task names its
screening (resource, instrument, score, time received); a roster-raised task carries its rule's
description, its route basis and a "rule version current" flag that turns false once the rules file
changes the rule's version."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import FhirResource, ScreeningEvent, Task
from app.rules.config import load_rules
from app.rules.engine import RuleEngine
from app.runtime import Runtime
from app.settings import DEFAULT_RULES_FILE, Settings
from tests.conftest import bearer, eventually
from tests.fhir_builder import MRN_SYSTEM, encode, observation
from tests.integration.test_rules_scenarios import _running, shipped
from tests.roster_builder import csv_text, member

__all__ = ["shipped"]


@pytest.fixture
async def service(shipped: Settings, db: AsyncEngine) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    settings = shipped.model_copy(update={"assigning_authority_systems": {"GOODHEALTH": MRN_SYSTEM}})
    async with _running(settings) as running:
        yield running


def bump_version(runtime: Runtime, tmp_path: Path, rule_id: str) -> None:
    """The rules file now loaded gives `rule_id` a new version (as after an edit and a restart)."""
    text = DEFAULT_RULES_FILE.read_text()
    marker = f'id = "{rule_id}"\nversion = "'
    start = text.index(marker) + len(marker)
    end = text.index('"', start)
    edited = tmp_path / "rules.toml"
    edited.write_text(text[:start] + text[start:end] + "-edited" + text[end:])
    runtime.rule_engine = RuleEngine(load_rules(edited), runtime.zone)


async def one_task(db: AsyncEngine, task_type: str) -> Task | None:
    async with db.connect() as conn:
        rows = (await conn.execute(select(Task).where(Task.type == task_type))).all()
    return rows[0] if len(rows) == 1 else None  # type: ignore[return-value]


async def explain(client: httpx.AsyncClient, token_for: Callable[..., str], task: Task) -> dict:
    token = token_for(task.role, teams=(task.team,) if task.team else ())
    response = await client.get(f"/tasks/{task.id}/explain", headers=bearer(token))
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_screening_raised_task_names_its_screening(
    service: tuple[Runtime, httpx.AsyncClient], db: AsyncEngine, token_for: Callable[..., str], tmp_path: Path
) -> None:
    runtime, client = service
    effective = (datetime.now(UTC) - timedelta(hours=5)).replace(microsecond=0)
    obs = observation(mrn="MRN-EXPLAIN", ident="PHQ9-EXPLAIN", effective=effective.isoformat())
    sent = await client.post(
        "/fhir/Observation",
        content=encode(obs),
        headers={**bearer(token_for("INTEGRATION", sub="ehr")), "Content-Type": "application/fhir+json"},
    )
    assert sent.status_code == 202, sent.text
    task = await eventually(lambda: one_task(db, "bh-referral"))
    assert task is not None, "the positive screen raised no referral"
    async with db.connect() as conn:
        screening = (await conn.execute(select(ScreeningEvent))).one()
        resource = (await conn.execute(select(FhirResource.id).where(FhirResource.id == screening.source_id))).one()

    body = await explain(client, token_for, task)
    [named] = body["screenings"]
    assert named["event_id"] == str(screening.id) == task.triggering_event_ids[0]
    assert named["resource"] == f"Observation/{resource.id}"
    assert (named["instrument"], named["score"], named["positive"], named["status"]) == ("PHQ-9", 14, True, "active")
    assert datetime.fromisoformat(named["effective_at"]) == effective
    assert abs(datetime.fromisoformat(named["received_at"]) - datetime.now(UTC)) < timedelta(minutes=5)
    assert body["rule"]["id"] == "bh-referral" and body["rule_description"] and body["rule_version_current"]
    assert body["route_basis"]["role"] == task.role

    bump_version(runtime, tmp_path, "bh-referral")
    assert (await explain(client, token_for, task))["rule_version_current"] is False


async def test_a_roster_raised_task_has_its_rule_route_and_version_flag(
    service: tuple[Runtime, httpx.AsyncClient], db: AsyncEngine, token_for: Callable[..., str], tmp_path: Path
) -> None:
    runtime, client = service
    upload = await client.post(
        "/rosters/imports",
        headers=bearer(token_for("DATA")),
        files={"file": ("r.csv", csv_text([member(1, bh_program="Y")]).encode(), "text/csv")},
    )
    assert upload.status_code == 202, upload.text
    task = await eventually(lambda: one_task(db, "new-member-outreach"))
    assert task is not None, "the roster raised no outreach task"

    body = await explain(client, token_for, task)
    assert body["rule"] == {"id": "new-member-outreach", "version": "1"}
    assert body["rule_description"] == runtime.rules.member_rule[0].description != ""
    assert body["rule_version_current"] is True
    assert body["route_basis"]["population"] == "behavioral-health" and body["route_basis"]["role"] == task.role
    assert body["triggering_events"][0]["event_id"] == upload.json()["id"] and body["screenings"] == []
    assert uuid.UUID(body["task_id"]) == task.id

    bump_version(runtime, tmp_path, "new-member-outreach")
    assert (await explain(client, token_for, task))["rule_version_current"] is False
