"""A real FHIR client library (fhirpy, pinned in the [test] extra) against the app served by a real
uvicorn on a free loopback port: create, read, update (If-Match), search and page CarePlans, read and
find Patients, and see the server's errors as the client raises them."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable

import pytest
import uvicorn
from fhirpy import AsyncFHIRClient
from fhirpy.base.exceptions import MultipleResourcesFound, OperationOutcome, ResourceNotFound
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api.app import create_app
from app.runtime import Runtime
from tests.careplan_seed import MRN_SYSTEM, seed_patient

pytestmark = pytest.mark.api_only  # seeds the database itself; no events are consumed

TokenFor = Callable[..., str]


@pytest.fixture
async def base_url(runtime: Runtime) -> AsyncIterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(runtime=runtime), log_level="warning"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}/fhir"
    finally:
        server.should_exit = True
        await serving
        sock.close()


def fhir_client(base_url: str, token: str, if_match: str | None = None) -> AsyncFHIRClient:
    extra = {"If-Match": if_match} if if_match else None
    return AsyncFHIRClient(base_url, authorization=f"Bearer {token}", extra_headers=extra)


async def test_fhirpy_works_care_plans_and_patients(base_url: str, db: AsyncEngine, token_for: TokenFor) -> None:
    seeded = await seed_patient(db)
    other = await seed_patient(db)
    token = token_for("BHCF", sub="fac-1", teams=("T1",))
    client = fhir_client(base_url, token)

    patient = await client.reference("Patient", str(seeded.patient_id)).to_resource()
    assert patient["identifier"][0]["value"] == seeded.mrn
    found = await client.resources("Patient").search(identifier=f"{MRN_SYSTEM}|{seeded.mrn}").get()
    assert found.id == str(seeded.patient_id)

    plan = client.resource(
        "CarePlan",
        status="active",
        intent="plan",
        title="Stay well at home",
        subject=patient.to_reference(),
        contained=[
            {
                "resourceType": "Goal",
                "id": "goal-g1",
                "lifecycleStatus": "active",
                "description": {"text": "Walk to the park every day"},
                "subject": {"reference": f"Patient/{seeded.patient_id}"},
                "expressedBy": {"reference": f"Patient/{seeded.patient_id}"},
            }
        ],
        goal=[{"reference": "#goal-g1"}],
        activity=[{"reference": {"reference": f"Task/{seeded.task_id}", "display": "Post-discharge call"}}],
    )
    await plan.save()
    assert plan.id and plan["meta"]["versionId"] == "1"

    read = await client.reference("CarePlan", plan.id).to_resource()
    assert read["title"] == "Stay well at home"
    assert read["activity"][0]["reference"]["reference"] == f"Task/{seeded.task_id}"

    # Update: the server requires If-Match (versioned-update); without it the client sees the 428.
    read["title"] = "Stay well at home (revised)"
    with pytest.raises(OperationOutcome, match="If-Match is required"):
        await client.resource("CarePlan", **read.serialize()).save()
    stale = fhir_client(base_url, token, if_match='W/"0"')
    with pytest.raises(MultipleResourcesFound, match="Precondition failed"):  # fhirpy's name for any 412
        await stale.resource("CarePlan", **read.serialize()).save()
    writer = fhir_client(base_url, token, if_match=f'W/"{read["meta"]["versionId"]}"')
    saved = writer.resource("CarePlan", **read.serialize())
    await saved.save()
    assert saved["meta"]["versionId"] == "2" and saved["title"] == "Stay well at home (revised)"

    for extra in (seeded, other):
        for n in range(2):
            await client.resource(
                "CarePlan",
                status="draft",
                intent="plan",
                title=f"draft {n}",
                subject={"reference": f"Patient/{extra.patient_id}"},
            ).save()
    mine = client.resources("CarePlan").search(subject=f"Patient/{seeded.patient_id}")
    assert await mine.count() == 3
    paged = await mine.limit(2).fetch_all()  # follows the server's `next` links
    assert len(paged) == 3 and len({p.id for p in paged}) == 3
    active = await client.resources("CarePlan").search(subject=f"Patient/{seeded.patient_id}", status="active").fetch()
    assert [p.id for p in active] == [plan.id]
    drafts = await client.resources("CarePlan").search(status="draft").fetch_all()
    assert len(drafts) == 4

    outsider = fhir_client(base_url, token_for("BHCF", teams=("T9",)))
    with pytest.raises(ResourceNotFound):
        await outsider.reference("CarePlan", plan.id).to_resource()
    assert await outsider.resources("CarePlan").count() == 0
