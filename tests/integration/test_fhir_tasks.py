"""FHIR R4 Task over HTTP: read, search, PUT and JSON Patch, with a real FHIR client (fhirpy) against
the app served by uvicorn on a loopback port. Real database (SQLite, or PostgreSQL by env)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import uvicorn
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.task import Task as FhirTask
from fhirpy import AsyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome as ClientOutcome
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api.app import create_app
from app.db.models import TaskHistory
from app.messaging.embedded_broker import free_loopback_port
from app.messaging.keys import patient_partition_key
from app.runtime import Runtime
from tests.conftest import bearer, eventually
from tests.hl7_builder import adt
from tests.integration.test_adt_pipeline import produce
from tests.integration.test_worklists import seed

FHIR = "application/fhir+json"
TYPE_SYSTEM = "urn:carecoord:codesystem:task-type"


def outcome(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(FHIR)
    body = resp.json()
    OperationOutcome.model_validate(body)
    return body


async def test_read_renders_a_valid_r4_task_with_version(
    runtime: Runtime, client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    task = await seed(runtime, owner="ana", priority="urgent")
    pmc = bearer(token_for("PMC", sub="ana", teams=("T1",)))
    resp = await client.get(f"/fhir/Task/{task.id}", headers=pmc)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith(FHIR)
    assert resp.headers["etag"] == 'W/"1"'
    body = resp.json()
    FhirTask.model_validate(body)
    assert body["meta"]["versionId"] == "1" and body["meta"]["lastUpdated"].endswith("Z")
    assert (body["status"], body["intent"], body["priority"]) == ("ready", "order", "urgent")
    assert body["code"]["coding"] == [{"system": TYPE_SYSTEM, "code": "post-discharge-contact"}]
    assert body["for"] == {"reference": f"Patient/{task.patient_id}"}
    assert body["owner"]["identifier"] == {"system": "urn:carecoord:user", "value": "ana"}
    assert body["restriction"]["period"]["end"].endswith("Z") and "authoredOn" in body and "lastModified" in body
    outcome(await client.get("/fhir/Task/not-a-task", headers=pmc), 404)
    outcome(await client.get(f"/fhir/Task/{task.id}", headers=bearer(token_for("BHCF", teams=("T1",)))), 404)
    outcome(await client.get(f"/fhir/Task/{task.id}"), 401)

    metadata = (await client.get("/fhir/metadata")).json()
    CapabilityStatement.model_validate(metadata)
    [task_entry] = [r for r in metadata["rest"][0]["resource"] if r["type"] == "Task"]
    assert {i["code"] for i in task_entry["interaction"]} == {"read", "search-type", "update", "patch"}
    assert {p["name"] for p in task_entry["searchParam"]} == {
        "owner", "status", "patient", "code", "period", "_lastUpdated"
    }  # fmt: skip


@pytest.mark.api_only
async def test_search_parameters_paging_and_scope(
    runtime: Runtime, client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    tasks = [await seed(runtime, due_in=timedelta(days=d)) for d in (1, 2, 3)]
    owned = await seed(runtime, owner="ana", due_in=timedelta(days=4), type_="medication-reconciliation")
    done = await seed(runtime, status="completed", due_in=timedelta(days=5))
    await seed(runtime, team="T2")  # another team's
    await seed(runtime, part2=True)  # Part 2, hidden from a caller without the permission
    pmc = bearer(token_for("PMC", sub="ana", teams=("T1",)))

    async def search(**params: str) -> dict[str, Any]:
        resp = await client.get("/fhir/Task", params=params, headers=pmc)
        assert resp.status_code == 200, resp.text
        bundle = resp.json()
        Bundle.model_validate(bundle)
        return bundle

    def ids(bundle: dict[str, Any]) -> list[str]:
        return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]

    everything = await search()
    assert everything["total"] == 5 and ids(everything) == [str(t.id) for t in [*tasks, owned, done]]
    first = await search(_count="2")
    assert ids(first) == [str(tasks[0].id), str(tasks[1].id)] and first["total"] == 5
    [next_link] = [link["url"] for link in first["link"] if link["relation"] == "next"]
    second = (await client.get(next_link, headers=pmc)).json()
    assert ids(second) == [str(tasks[2].id), str(owned.id)]
    assert ids(await search(status="completed")) == [str(done.id)]
    assert ids(await search(status="http://hl7.org/fhir/task-status|ready", owner="ana")) == [str(owned.id)]
    assert ids(await search(owner="Practitioner/ana")) == [str(owned.id)]
    assert ids(await search(code=f"{TYPE_SYSTEM}|medication-reconciliation")) == [str(owned.id)]
    assert ids(await search(code="other-system|medication-reconciliation")) == []
    assert ids(await search(patient=f"Patient/{tasks[1].patient_id}")) == [str(tasks[1].id)]
    due = tasks[1].due_at.astimezone(ZoneInfo("America/New_York")).date().isoformat()  # the facility's day
    assert str(tasks[1].id) in ids(await search(period=f"le{due}"))
    assert str(tasks[2].id) not in ids(await search(period=f"le{due}"))
    assert ids(await search(_sort="-period", _count="1")) == [str(done.id)]
    assert (await search(_lastUpdated="gt2000-01-01"))["total"] == 5
    assert (await search(_lastUpdated="lt2000-01-01"))["total"] == 0
    assert (await search(_count="0"))["total"] == 5

    lenient = await search(colour="blue")
    assert lenient["entry"][-1]["search"]["mode"] == "outcome"
    strict = await client.get("/fhir/Task", params={"colour": "blue"}, headers={**pmc, "Prefer": "handling=strict"})
    outcome(strict, 400)
    outcome(await client.get("/fhir/Task", params={"_sort": "colour"}, headers=pmc), 400)
    outcome(await client.get("/fhir/Task", params={"status:not": "ready"}, headers=pmc), 400)
    outcome(await client.get("/fhir/Task", params={"_cursor": "zzz"}, headers=pmc), 400)


@pytest.mark.api_only
async def test_put_and_patch_change_status_and_owner_only(
    runtime: Runtime, client: httpx.AsyncClient, token_for: Callable[..., str], db: AsyncEngine
) -> None:
    task = await seed(runtime)
    url = f"/fhir/Task/{task.id}"
    ana = bearer(token_for("PMC", sub="ana", teams=("T1",)))
    bo = bearer(token_for("PMC", sub="bo", teams=("T1",)))
    current = (await client.get(url, headers=ana)).json()

    claim = [{"op": "add", "path": "/owner", "value": {"reference": "Practitioner/ana"}}]
    patch_headers = {**ana, "Content-Type": "application/json-patch+json", "If-Match": 'W/"1"'}
    claimed = await client.patch(url, json=claim, headers=patch_headers)
    assert claimed.status_code == 200, claimed.text
    FhirTask.model_validate(claimed.json())
    assert claimed.json()["owner"]["identifier"]["value"] == "ana" and claimed.headers["etag"] == 'W/"2"'
    outcome(await client.patch(url, json=claim, headers=patch_headers), 412)  # stale If-Match
    outcome(await client.patch(url, json=claim, headers={**ana, "Content-Type": "application/json"}), 415)
    bad_pointer = [{"op": "remove", "path": "/nothing"}]
    outcome(await client.patch(url, json=bad_pointer, headers={**patch_headers, "If-Match": 'W/"2"'}), 422)

    # bo cannot take ana's task through FHIR either.
    theirs = dict(current, owner={"reference": "Practitioner/bo"})
    v2 = {"If-Match": 'W/"2"'}
    assert outcome(await client.put(url, json=theirs, headers={**bo, **v2}), 409)["issue"][0]["expression"] == [
        "Task.owner"
    ]

    mine = (await client.get(url, headers=ana)).json()
    changed_due = dict(mine, restriction={"period": {"end": "2030-01-01T00:00:00Z"}})
    outcome(await client.put(url, json=mine, headers=ana), 428)  # versioned update: If-Match is required
    refused = outcome(await client.put(url, json=changed_due, headers={**ana, **v2}), 422)
    assert refused["issue"][0]["expression"] == ["Task.restriction"]
    outcome(await client.put(url, json=dict(mine, priority="stat"), headers={**ana, **v2}), 422)
    outcome(await client.put(url, json=dict(mine, id="other"), headers={**ana, **v2}), 422)
    outcome(await client.put(url, json=dict(mine, status="bogus"), headers={**ana, **v2}), 409)

    started = await client.put(url, json=dict(mine, status="in-progress"), headers={**ana, "If-Match": 'W/"2"'})
    assert started.status_code == 200 and started.json()["status"] == "in-progress"
    completed = await client.put(
        url,
        json=dict(started.json(), status="completed", businessStatus={"text": "appointment kept"}),
        headers={**ana, "If-Match": 'W/"3"'},
    )
    assert completed.status_code == 200, completed.text
    assert completed.json()["businessStatus"] == {"text": "appointment kept"} and completed.headers["etag"] == 'W/"4"'
    async with db.connect() as conn:
        actions = (
            await conn.execute(
                select(TaskHistory.action, TaskHistory.actor)
                .where(TaskHistory.task_id == task.id)
                .order_by(TaskHistory.id)
            )
        ).all()
    assert [tuple(a) for a in actions] == [("claim", "user:ana"), ("start", "user:ana"), ("complete", "user:ana")]


@pytest.fixture
async def served(runtime: Runtime) -> AsyncIterator[str]:
    """The app on a real uvicorn server on a free loopback port, in this event loop."""
    port = free_loopback_port()
    server = uvicorn.Server(uvicorn.Config(create_app(runtime=runtime), host="127.0.0.1", port=port, lifespan="off",
                                           log_level="warning"))  # fmt: skip
    serving = asyncio.create_task(server.serve())
    while not server.started:
        assert not serving.done(), "uvicorn did not start"
        await asyncio.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    with contextlib.suppress(asyncio.CancelledError):
        await serving


async def test_a_fhir_client_works_a_task_from_adt_to_completion(
    runtime: Runtime, served: str, token_for: Callable[..., str], db: AsyncEngine
) -> None:
    await produce(runtime.settings, adt().encode(), key=patient_partition_key("urn:hl7v2:aa:GOODHEALTH", "MRN12345"))
    fhir = AsyncFHIRClient(f"{served}/fhir", authorization=f"Bearer {token_for('PMC', sub='pmc-1')}")
    other = AsyncFHIRClient(f"{served}/fhir", authorization=f"Bearer {token_for('PMC', sub='pmc-2')}")

    [found] = await eventually(lambda: fhir.resources("Task").search(status="ready").fetch_all())
    assert found["code"]["coding"][0]["code"] == "post-discharge-contact"
    task = await fhir.reference("Task", found["id"]).to_resource()
    assert task["meta"]["versionId"] == "1" and "owner" not in task

    def as_of(sub: str, version: str) -> AsyncFHIRClient:  # a versioned update names the version it read
        token = token_for("PMC", sub=sub)
        return AsyncFHIRClient(
            f"{served}/fhir", authorization=f"Bearer {token}", extra_headers={"If-Match": f'W/"{version}"'}
        )

    # Claim: set owner to me; a second facilitator's claim is refused with an OperationOutcome.
    task["owner"] = {"reference": "Practitioner/pmc-1"}
    task = as_of("pmc-1", "1").resource("Task", **task.serialize())
    await task.save()
    assert task["meta"]["versionId"] == "2" and task["owner"]["identifier"]["value"] == "pmc-1"
    rival = await other.reference("Task", found["id"]).to_resource()
    rival["owner"] = {"reference": "Practitioner/pmc-2"}
    rival = as_of("pmc-2", "2").resource("Task", **rival.serialize())
    with pytest.raises(ClientOutcome) as refused:
        await rival.save()
    assert "owned by someone else" in str(refused.value)

    mine = await fhir.resources("Task").search(owner="pmc-1", status="ready").fetch_all()
    assert [t["id"] for t in mine] == [found["id"]]
    task["status"] = "completed"
    task["businessStatus"] = {"text": "reached; follow-up booked"}
    task = as_of("pmc-1", "2").resource("Task", **task.serialize())
    await task.save()
    reread = await fhir.reference("Task", found["id"]).to_resource()
    assert reread["status"] == "completed" and reread["meta"]["versionId"] == "3"
    assert reread["businessStatus"]["text"] == "reached; follow-up booked"
    assert await fhir.resources("Task").search(status="ready").fetch_all() == []
