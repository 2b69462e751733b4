"""Every route of the app x roles: no token -> 401, the wrong role (or a resource out of the caller's
team) -> 403/404, the right role without the SMART scope -> 403, the right role and scope -> 2xx.

The table below must list every route `app.routes` serves: a route added later without an entry fails
`test_every_route_is_in_the_matrix`, so nobody ships an endpoint without deciding who may call it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.api.app import create_app
from app.db.models import Consent, Encounter, Patient, RejectedEvent
from app.runtime import Runtime
from app.settings import Settings
from tests.access_builder import record_consent, scope_task
from tests.conftest import bearer, eventually
from tests.fhir_builder import encode, fixture, observation, phq9_response, transaction
from tests.hl7_builder import adt
from tests.integration.test_davinci import sample as davinci_bundle
from tests.roster_builder import csv_text, member

ALL_SCOPES = ["user/*.cruds", "system/*.cruds"]
NO_USEFUL_SCOPE = ["user/Nothing.cruds"]
FHIR_JSON = {"Content-Type": "application/fhir+json"}

PUBLIC = {
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/fhir/metadata"),
}


@dataclass(frozen=True)
class Access:
    ok: tuple[str, ...]  # roles of a caller (team T1) who gets `ok_status`
    ok_status: int
    denied: tuple[str, ...] | None  # roles of a caller refused with `denied_status` (None: every role may)
    denied_status: int
    scope: str | None  # the SMART resource type the route needs (None: role-gated only)


def care(ok_status: int = 200, scope: str | None = "Task", denied: tuple[str, ...] = ("INTEGRATION",)) -> Access:
    return Access(("BHCF",), ok_status, denied, 403, scope)


MATRIX: dict[tuple[str, str], Access] = {
    ("GET", "/tasks"): Access(("BHCF",), 200, None, 403, "Task"),  # every role reads its own queue
    # another role's task is out of scope: 404, as for a task that does not exist
    ("GET", "/tasks/{task_id}/explain"): Access(("BHCF",), 200, ("PMC",), 404, "Task"),
    ("POST", "/tasks/{task_id}/attempts"): Access(("BHCF",), 200, ("PMC",), 404, "Task"),
    ("GET", "/tasks/escalated"): Access(("SUPERVISOR",), 200, ("BHCF",), 403, "Task"),
    ("POST", "/ingest/hl7v2"): Access(("INTEGRATION",), 202, ("BHCF",), 403, "Encounter"),
    ("GET", "/admin/dead-letters"): Access(("ADMIN",), 200, ("BHCF",), 403, None),
    ("GET", "/admin/dead-letters/{rejected_id}"): Access(("ADMIN",), 200, ("BHCF",), 403, None),
    ("POST", "/admin/dead-letters/{rejected_id}/replay"): Access(("ADMIN",), 200, ("BHCF",), 403, None),
    ("POST", "/admin/dead-letters/{rejected_id}/discard"): Access(("ADMIN",), 200, ("BHCF",), 403, None),
    ("POST", "/rosters/imports"): Access(("DATA",), 202, ("BHCF",), 403, "Group"),
    ("GET", "/rosters/imports/{import_id}"): Access(("DATA",), 200, ("BHCF",), 403, "Group"),
    ("GET", "/rosters/imports/{import_id}/changes"): Access(("DATA",), 200, ("BHCF",), 403, "Group"),
    ("GET", "/rosters/exports/{kind}"): Access(("DATA",), 200, ("BHCF",), 403, "Group"),
    ("GET", "/metrics"): Access(("DATA",), 200, ("BHCF",), 403, None),
    ("GET", "/fhir/Encounter/{resource_id}"): care(scope="Encounter"),
    ("GET", "/fhir/Encounter"): care(scope="Encounter"),
    ("POST", "/fhir/$process-message"): Access(("INTEGRATION",), 202, ("BHCF",), 403, "Bundle"),
    ("POST", "/fhir"): Access(("INTEGRATION",), 202, ("BHCF",), 403, "Bundle"),
    ("POST", "/fhir/Encounter"): Access(("INTEGRATION",), 202, ("BHCF",), 403, "Encounter"),
    ("POST", "/fhir/Observation"): Access(("INTEGRATION",), 202, ("BHCF",), 403, "Observation"),
    ("POST", "/fhir/Questionnaire"): Access(("INTEGRATION",), 202, ("BHCF",), 403, "Questionnaire"),
    ("POST", "/fhir/QuestionnaireResponse"): Access(("INTEGRATION",), 202, ("BHCF",), 403, "QuestionnaireResponse"),
    ("GET", "/fhir/Observation"): care(scope="Observation"),
    ("GET", "/fhir/QuestionnaireResponse"): care(scope="QuestionnaireResponse"),
    ("GET", "/patients/{patient_id}/screenings"): care(scope="Observation"),
    ("POST", "/patients/{patient_id}/consents"): Access(("SUPERVISOR",), 201, ("BHCF",), 403, "Consent"),
    ("GET", "/fhir/Consent/{resource_id}"): Access(("BHCF", "PART2"), 200, ("BHCF",), 403, "Consent"),
    ("GET", "/fhir/Consent"): Access(("BHCF", "PART2"), 200, ("BHCF",), 403, "Consent"),
    ("GET", "/fhir/AuditEvent"): Access(("AUDITOR",), 200, ("BHCF", "SUPERVISOR", "ADMIN"), 403, "AuditEvent"),
}


def served_routes(app: FastAPI) -> Iterator[tuple[str, str]]:
    """(method, path) of every route, including those of included routers (FastAPI resolves them lazily)."""
    for route in app.routes:
        contexts = route.effective_route_contexts() if hasattr(route, "effective_route_contexts") else [route]
        for leaf in contexts:
            for method in sorted(getattr(leaf, "methods", None) or {"GET"}):
                if method != "HEAD":
                    yield method, leaf.path


def test_every_route_is_in_the_matrix(runtime: Runtime) -> None:
    served = set(served_routes(create_app(runtime=runtime)))
    unlisted = served - PUBLIC - set(MATRIX)
    assert not unlisted, f"routes without an authorization matrix entry: {sorted(unlisted)}"
    stale = (set(MATRIX) | PUBLIC) - served
    assert not stale, f"matrix entries for routes that no longer exist: {sorted(stale)}"


@dataclass
class World:
    patient_id: uuid.UUID
    task_id: uuid.UUID
    encounter_id: uuid.UUID
    consent_id: uuid.UUID
    dead_letters: list[uuid.UUID]
    import_id: str


async def build_world(db: AsyncEngine, client: httpx.AsyncClient, token: Callable[..., str]) -> World:
    async with AsyncSession(db, expire_on_commit=False) as session, session.begin():
        patient = Patient(family_name="MATRIX")
        session.add(patient)
        await session.flush()
        task = scope_task(patient.id, "BHCF", "T1")
        encounter = Encounter(
            patient_id=patient.id, facility="GOODHEALTH", visit_number="MX1", status="finished", diagnoses=[],
            security_labels=[], admit_at=datetime(2026, 11, 1, tzinfo=UTC),
        )  # fmt: skip
        rows = [
            RejectedEvent(
                source="hl7v2",
                topic=None,
                partition=None,
                offset=None,
                reason="processing failed: an earlier bug",
                payload=adt(control_id=f"MX-{n}", mrn=f"MX-{n}").encode(),
            )
            for n in range(3)
        ]
        session.add_all([task, encounter, *rows])
    await record_consent(db, patient.id)
    async with AsyncSession(db) as session:
        consent_id = await session.scalar(select(Consent.id).where(Consent.patient_id == patient.id))
    assert consent_id is not None
    upload = await client.post(
        "/rosters/imports",
        headers=bearer(token("DATA", scopes=ALL_SCOPES)),
        files={"file": ("mx.csv", csv_text([member(1)]).encode(), "text/csv")},
        data={"as_of": "2026-11-02"},
    )
    assert upload.status_code == 202, upload.text
    import_id = upload.json()["id"]

    async def imported() -> bool:
        response = await client.get(f"/rosters/imports/{import_id}", headers=bearer(token("DATA", scopes=ALL_SCOPES)))
        return response.json()["status"] != "queued"

    assert await eventually(imported)
    return World(patient.id, task.id, encounter.id, consent_id, [r.id for r in rows], import_id)


def request_for(method: str, path: str, w: World) -> dict[str, Any]:
    """A valid request for the route: what the right caller gets 2xx for."""
    url = path.format(
        task_id=w.task_id,
        rejected_id=w.dead_letters[{"replay": 1, "discard": 2}.get(path.rsplit("/", 1)[-1], 0)],
        import_id=w.import_id,
        kind="ens",
        resource_id=w.consent_id if "Consent" in path else w.encounter_id,
        patient_id=w.patient_id,
    )
    kw: dict[str, Any] = {}
    if path in ("/fhir/Observation", "/fhir/QuestionnaireResponse", "/fhir/Consent") and method == "GET":
        kw["params"] = {"patient": str(w.patient_id)}
    bodies: dict[tuple[str, str], tuple[bytes, dict[str, str]]] = {
        ("POST", "/ingest/hl7v2"): (adt(control_id="MX-INGEST").encode(), {"Content-Type": "application/hl7-v2"}),
        ("POST", "/fhir/$process-message"): (json.dumps(davinci_bundle("admit")).encode(), FHIR_JSON),
        ("POST", "/fhir"): (encode(transaction(observation(ident="MX-T"))), FHIR_JSON),
        ("POST", "/fhir/Encounter"): (encode(fixture("encounter-inpatient-finished")), FHIR_JSON),
        ("POST", "/fhir/Observation"): (encode(observation(ident="MX-O")), FHIR_JSON),
        ("POST", "/fhir/Questionnaire"): (encode(fixture("questionnaire-phq9")), FHIR_JSON),
        ("POST", "/fhir/QuestionnaireResponse"): (encode(phq9_response(mrn="MX-QR")), FHIR_JSON),
    }
    if (method, path) in bodies:
        kw["content"], kw["headers"] = bodies[(method, path)]
    elif path.endswith("/attempts"):
        kw["json"] = {"outcome": "no-answer"}
    elif path.endswith("/discard"):
        kw["json"] = {"reason": "matrix"}
    elif path.endswith("/consents"):
        kw["json"] = {"status": "active"}
    elif path == "/rosters/imports":
        kw["files"] = {"file": ("mx2.csv", csv_text([member(2)]).encode(), "text/csv")}
        kw["data"] = {"as_of": "2026-11-03"}
    return {"method": method, "url": url, **kw}


async def call(client: httpx.AsyncClient, req: dict[str, Any], token: str | None) -> httpx.Response:
    req = dict(req)
    headers = dict(req.pop("headers", {}))
    if token is not None:
        headers.update(bearer(token))
    return await client.request(headers=headers, **req)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Own ENS topics: the matrix posts a Da Vinci notification, which must not outlive this test."""
    suffix = uuid.uuid4().hex[:8]
    topics = settings.topics.model_copy(update={"ens": f"ens-{suffix}", "ens_dead_letter": f"ens-dlq-{suffix}"})
    return settings.model_copy(update={"topics": topics})


@pytest.fixture
def token(token_for: Callable[..., str], settings: Any) -> Callable[..., str]:
    from app.api.auth import mint_token

    def _mint(*roles: str, scopes: list[str] | None = None, teams: tuple[str, ...] = ("T1",)) -> str:
        return mint_token(settings, "matrix-user", list(roles), list(teams), 600, scopes=scopes)

    return _mint


async def test_authorization_matrix(
    runtime: Runtime, client: httpx.AsyncClient, db: AsyncEngine, token: Callable[..., str]
) -> None:
    world = await build_world(db, client, token)
    failures: list[str] = []
    for (method, path), access in MATRIX.items():
        req = request_for(method, path, world)
        checks: list[tuple[str, str | None, int]] = [("no token", None, 401)]
        if access.denied is not None:
            checks.append((f"roles {access.denied}", token(*access.denied, scopes=ALL_SCOPES), access.denied_status))
        if access.scope is not None:
            checks.append(("no scope for it", token(*access.ok, scopes=NO_USEFUL_SCOPE), 403))
        checks.append((f"roles {access.ok}", token(*access.ok, scopes=ALL_SCOPES), access.ok_status))
        for label, bearer_token, expected in checks:
            response = await call(client, req, bearer_token)
            if response.status_code != expected:
                failures.append(
                    f"{method} {path} as {label}: {response.status_code} != {expected} {response.text[:200]}"
                )
    assert not failures, "\n".join(failures)


async def test_public_routes_answer_without_a_token(runtime: Runtime, client: httpx.AsyncClient) -> None:
    for method, path in sorted(PUBLIC):
        response = await client.request(method, path)
        assert response.status_code == 200, (path, response.text[:200])


async def test_production_tokens_without_scope_claim_are_refused(
    runtime: Runtime, db: AsyncEngine, token: Callable[..., str]
) -> None:
    runtime.settings.require_scopes = True  # as in production
    try:
        app = create_app(runtime=runtime)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://carecoord.test") as c:
            unscoped = await c.get("/tasks", headers=bearer(token("BHCF")))
            scoped_ok = await c.get("/tasks", headers=bearer(token("BHCF", scopes=["user/Task.rs"])))
    finally:
        runtime.settings.require_scopes = None
    assert unscoped.status_code == 403 and unscoped.json()["field"] == "scope"
    assert scoped_ok.status_code == 200


async def test_team_scoping_hides_other_teams_tasks(
    runtime: Runtime, client: httpx.AsyncClient, db: AsyncEngine, token: Callable[..., str]
) -> None:
    async with AsyncSession(db, expire_on_commit=False) as session, session.begin():
        patient = Patient(family_name="TEAMS")
        session.add(patient)
        await session.flush()
        t1_task = scope_task(patient.id, "BHCF", "T1")
        session.add(t1_task)
    t1, t2 = token("BHCF", teams=("T1",)), token("BHCF", teams=("T2",))
    assert (await client.get(f"/tasks/{t1_task.id}/explain", headers=bearer(t1))).status_code == 200
    hidden = await client.get(f"/tasks/{t1_task.id}/explain", headers=bearer(t2))
    assert hidden.status_code == 404
    unknown = await client.get(f"/tasks/{uuid.uuid4()}/explain", headers=bearer(t2))
    assert hidden.json()["detail"] == unknown.json()["detail"]  # indistinguishable from a missing task
    listed_t1 = {i["id"] for i in (await client.get("/tasks", headers=bearer(t1))).json()["items"]}
    listed_t2 = (await client.get("/tasks", headers=bearer(t2))).json()
    assert str(t1_task.id) in listed_t1
    assert str(t1_task.id) not in {i["id"] for i in listed_t2["items"]}
    # the patient is not T2's either: screenings answer as for an unknown patient
    care_t2 = token("BHCF", teams=("T2",))
    assert (await client.get(f"/patients/{patient.id}/screenings", headers=bearer(care_t2))).status_code == 404
