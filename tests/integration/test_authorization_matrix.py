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
from app.settings import DEFAULT_RULES_FILE, Settings
from tests.access_builder import record_consent, scope_task
from tests.conftest import bearer, eventually
from tests.fhir_builder import (
    consult_note,
    encode,
    fixture,
    med_rec_procedure,
    observation,
    phq9_response,
    transaction,
)
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
    ("GET", "/admin/data-quality"): Access(("ADMIN",), 200, ("BHCF",), 403, None),
    ("GET", "/admin/dead-letters"): Access(("ADMIN",), 200, ("BHCF",), 403, None),
    ("GET", "/admin/dead-letters/{rejected_id}"): Access(("ADMIN",), 200, ("BHCF",), 403, None),
    ("POST", "/admin/dead-letters/{rejected_id}/replay"): Access(("ADMIN",), 200, ("BHCF",), 403, None),
    ("POST", "/admin/dead-letters/{rejected_id}/discard"): Access(("ADMIN",), 200, ("BHCF",), 403, None),
    ("POST", "/rosters/imports"): Access(("DATA",), 202, ("BHCF",), 403, "Group"),
    ("GET", "/rosters/imports/{import_id}"): Access(("DATA",), 200, ("BHCF",), 403, "Group"),
    ("GET", "/rosters/imports/{import_id}/changes"): Access(("DATA",), 200, ("BHCF",), 403, "Group"),
    ("GET", "/rosters/imports"): Access(("DATA",), 200, ("BHCF",), 403, "Group"),
    # The matrix's import completed (it was not held): allowed callers get 409, not a decision.
    ("POST", "/rosters/imports/{import_id}/confirm"): Access(("DATA",), 409, ("BHCF",), 403, "Group"),
    ("POST", "/rosters/imports/{import_id}/reject"): Access(("DATA",), 409, ("BHCF",), 403, "Group"),
    ("GET", "/rosters/exports/{kind}"): Access(("DATA",), 200, ("BHCF",), 403, "Group"),
    ("GET", "/metrics"): Access(("METRICS",), 200, ("DATA",), 403, None),
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
    # tasks and worklists (SMART Task): another role's task reads as missing
    ("GET", "/tasks/{task_id}"): Access(("BHCF",), 200, ("PMC",), 404, "Task"),
    ("GET", "/worklists/summary"): Access(("BHCF",), 200, None, 403, "Task"),  # each role its own queues
    ("GET", "/worklists/{role}"): Access(("BHCF",), 200, ("PMC",), 403, "Task"),  # another role's queue
    ("POST", "/tasks/{task_id}/claim"): Access(("BHCF",), 200, ("PMC",), 404, "Task"),
    ("POST", "/tasks/{task_id}/release"): Access(("BHCF",), 200, ("PMC",), 404, "Task"),
    ("POST", "/tasks/{task_id}/assign"): Access(("SUPERVISOR",), 200, ("BHCF",), 403, "Task"),
    ("POST", "/tasks/{task_id}/start"): Access(("BHCF",), 200, ("PMC",), 404, "Task"),
    ("POST", "/tasks/{task_id}/complete"): Access(("BHCF",), 200, ("PMC",), 404, "Task"),
    ("POST", "/tasks/{task_id}/cancel"): Access(("BHCF",), 200, ("PMC",), 404, "Task"),
    ("POST", "/tasks/{task_id}/business-status"): Access(("BHCF",), 200, ("PMC",), 404, "Task"),
    ("GET", "/fhir/Task"): Access(("BHCF",), 200, None, 403, "Task"),
    ("GET", "/fhir/Task/{resource_id}"): Access(("BHCF",), 200, ("PMC",), 404, "Task"),
    ("PUT", "/fhir/Task/{resource_id}"): Access(("BHCF",), 200, ("PMC",), 404, "Task"),
    ("PATCH", "/fhir/Task/{resource_id}"): Access(("BHCF",), 200, ("PMC",), 404, "Task"),
    # care plans (SMART CarePlan): readers need the patient in scope (else 404), writers a facilitator
    # or supervisor role, sign-off a PCP role
    ("POST", "/patients/{patient_id}/care-plans"): Access(("BHCF",), 201, ("INTEGRATION",), 403, "CarePlan"),
    ("GET", "/patients/{patient_id}/care-plan"): Access(("BHCF",), 200, ("PMC",), 404, "CarePlan"),
    ("GET", "/patients/{patient_id}/care-plans"): Access(("BHCF",), 200, ("PMC",), 404, "CarePlan"),
    ("GET", "/care-plans/sign-off-due"): Access(("BHCF",), 200, None, 403, "CarePlan"),  # limited to scope
    ("GET", "/care-plans/{care_plan_id}"): Access(("BHCF",), 200, ("PMC",), 404, "CarePlan"),
    ("PUT", "/care-plans/{care_plan_id}"): Access(("BHCF",), 200, ("INTEGRATION",), 403, "CarePlan"),
    ("POST", "/care-plans/{care_plan_id}/sign-off"): Access(("PCP",), 200, ("BHCF",), 403, "CarePlan"),
    ("GET", "/care-plans/{care_plan_id}/history"): Access(("BHCF",), 200, ("PMC",), 404, "CarePlan"),
    ("POST", "/fhir/CarePlan"): Access(("BHCF",), 201, ("INTEGRATION",), 403, "CarePlan"),
    ("GET", "/fhir/CarePlan"): Access(("BHCF",), 200, None, 403, "CarePlan"),
    ("GET", "/fhir/CarePlan/{resource_id}"): Access(("BHCF",), 200, ("PMC",), 404, "CarePlan"),
    ("PUT", "/fhir/CarePlan/{resource_id}"): Access(("BHCF",), 200, ("INTEGRATION",), 403, "CarePlan"),
    ("GET", "/fhir/CarePlan/{resource_id}/_history"): Access(("BHCF",), 200, ("PMC",), 404, "CarePlan"),
    ("GET", "/fhir/CarePlan/{resource_id}/_history/{version_id}"): Access(("BHCF",), 200, ("PMC",), 404, "CarePlan"),
    ("GET", "/fhir/Patient"): Access(("BHCF",), 200, None, 403, "Patient"),  # searches within scope
    ("GET", "/fhir/Patient/{resource_id}"): Access(("BHCF",), 200, ("PMC",), 404, "Patient"),
    # quality measures (SMART Task search; the drill-down also Patient): care roles, numbers of their own scope
    ("GET", "/measures"): care(scope="Task"),
    ("GET", "/measures/{key}/patients"): care(scope="Patient"),
    # evidence feeds (rules): interface engines only
    ("POST", "/fhir/Procedure"): Access(("INTEGRATION",), 202, ("BHCF",), 403, "Procedure"),
    ("POST", "/fhir/DocumentReference"): Access(("INTEGRATION",), 202, ("BHCF",), 403, "DocumentReference"),
}


def served_routes(app: FastAPI) -> Iterator[tuple[str, str]]:
    """(method, path) of every route, including those of included routers (FastAPI resolves them lazily)."""
    for route in app.routes:
        contexts = route.effective_route_contexts() if hasattr(route, "effective_route_contexts") else [route]
        for leaf in contexts:
            for method in sorted(getattr(leaf, "methods", None) or {"GET"}):
                if method != "HEAD":
                    yield method, leaf.path


@pytest.mark.api_only
def test_every_route_is_in_the_matrix(runtime: Runtime) -> None:
    from tests.integration.test_ui_authorization import UI_MATRIX, UI_PUBLIC  # the web UI's own matrix

    served = set(served_routes(create_app(runtime=runtime))) - UI_PUBLIC - set(UI_MATRIX)
    unlisted = served - PUBLIC - set(MATRIX)
    assert not unlisted, f"routes without an authorization matrix entry: {sorted(unlisted)}"
    stale = (set(MATRIX) | PUBLIC) - served - UI_PUBLIC - set(UI_MATRIX)
    assert not stale, f"matrix entries for routes that no longer exist: {sorted(stale)}"


@dataclass
class World:
    patient_id: uuid.UUID
    task_id: uuid.UUID
    encounter_id: uuid.UUID
    consent_id: uuid.UUID
    dead_letters: list[uuid.UUID]
    import_id: str
    action_tasks: dict[str, uuid.UUID]  # one task per mutating route, so each starts from a known state
    plan_id: uuid.UUID  # the patient's active care plan (reads, sign-off)
    draft_plan_id: uuid.UUID  # a draft the REST PUT replaces
    fhir_draft_id: uuid.UUID  # a draft the FHIR PUT updates
    fhir_task: dict[str, Any]  # the FHIR Task PUT's task as read
    fhir_plan: dict[str, Any]  # the FHIR CarePlan PUT's plan as read
    part2_ids: tuple[str, ...] = ()  # the Part 2 seed: patient, encounter, task, consent


async def seed_part2(db: AsyncEngine) -> tuple[str, ...]:
    """A patient known only through 42 CFR Part 2 data (a Part 2 stay, its task in team T1, a consent):
    every id of it must stay out of every body a caller without the Part 2 permission gets."""
    async with AsyncSession(db, expire_on_commit=False) as session, session.begin():
        patient = Patient(family_name="PARTTWO")
        session.add(patient)
        await session.flush()
        stay = Encounter(
            patient_id=patient.id, facility="GOODHEALTH", visit_number="MX-P2", status="finished", diagnoses=[],
            security_labels=[], admit_at=datetime(2026, 11, 1, tzinfo=UTC), part2=True, hospital_service="SUD",
        )  # fmt: skip
        session.add(stay)
        await session.flush()
        task = scope_task(patient.id, "BHCF", "T1", encounter_id=stay.id, part2=True)
        session.add(task)
    await record_consent(db, patient.id)
    async with AsyncSession(db) as session:
        consent_id = await session.scalar(select(Consent.id).where(Consent.patient_id == patient.id))
    return (str(patient.id), str(stay.id), str(task.id), str(consent_id))


# one task each: (status, owner, type, business_status)
ACTION_TASKS: dict[str, tuple[str, str | None, str, str | None]] = {
    "claim": ("ready", None, "post-discharge-contact", None),
    "release": ("ready", "matrix-user", "post-discharge-contact", None),
    "assign": ("ready", None, "post-discharge-contact", None),
    "start": ("ready", None, "post-discharge-contact", None),
    "complete": ("in-progress", None, "post-discharge-contact", None),
    "cancel": ("ready", None, "post-discharge-contact", None),
    "business-status": ("ready", None, "bh-referral", "requested"),
    "fhir-put": ("ready", None, "post-discharge-contact", None),
    "fhir-patch": ("ready", None, "post-discharge-contact", None),
}
PLAN: dict[str, Any] = {
    "title": "Matrix plan",
    "goals": [{"description": "Sleep through the night", "target_date": "2027-01-15"}],
    "activities": [{"description": "Counselling referral", "goal_ids": ["g1"]}],
}


def fhir_plan(patient_id: uuid.UUID, status: str = "draft") -> dict[str, Any]:
    return {
        "resourceType": "CarePlan",
        "status": status,
        "intent": "plan",
        "title": "Matrix FHIR plan",
        "subject": {"reference": f"Patient/{patient_id}"},
        "activity": [{"detail": {"status": "not-started", "description": "Attend group"}}],
    }


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
        pcp_task = scope_task(patient.id, "PCP", "T1")  # the patient's PCP signs off the plan
        action_tasks = {
            name: scope_task(patient.id, "BHCF", "T1", status=status, owner=owner, type=type_, business_status=business)
            for name, (status, owner, type_, business) in ACTION_TASKS.items()
        }
        session.add_all([task, encounter, pcp_task, *action_tasks.values(), *rows])
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

    care = bearer(token("BHCF", scopes=ALL_SCOPES))
    plans = []
    for status in ("active", "draft"):
        created = await client.post(f"/patients/{patient.id}/care-plans", json=PLAN | {"status": status}, headers=care)
        assert created.status_code == 201, created.text
        plans.append(uuid.UUID(created.json()["id"]))
    created = await client.post("/fhir/CarePlan", json=fhir_plan(patient.id), headers=care | FHIR_JSON)
    assert created.status_code == 201, created.text
    fhir_draft_id = uuid.UUID(created.json()["id"])
    fhir_plan_read = await client.get(f"/fhir/CarePlan/{fhir_draft_id}", headers=care)
    fhir_task_read = await client.get(f"/fhir/Task/{action_tasks['fhir-put'].id}", headers=care)
    assert fhir_plan_read.status_code == 200 and fhir_task_read.status_code == 200, fhir_task_read.text
    return World(
        patient.id, task.id, encounter.id, consent_id, [r.id for r in rows], import_id,
        action_tasks={name: t.id for name, t in action_tasks.items()},
        plan_id=plans[0], draft_plan_id=plans[1], fhir_draft_id=fhir_draft_id,
        fhir_task=fhir_task_read.json(), fhir_plan=fhir_plan_read.json(), part2_ids=await seed_part2(db),
    )  # fmt: skip


def _resource_id(method: str, path: str, w: World) -> uuid.UUID:
    if "Consent" in path:
        return w.consent_id
    if "CarePlan" in path:
        return w.fhir_draft_id if method == "PUT" else w.plan_id
    if "Patient" in path:
        return w.patient_id
    if "Task" in path:
        return w.action_tasks[f"fhir-{method.lower()}"] if method in ("PUT", "PATCH") else w.task_id
    return w.encounter_id


def request_for(method: str, path: str, w: World) -> dict[str, Any]:
    """A valid request for the route: what the right caller gets 2xx for."""
    action = path.rsplit("/", 1)[-1]
    url = path.format(
        task_id=w.action_tasks.get(action, w.task_id) if method == "POST" else w.task_id,
        rejected_id=w.dead_letters[{"replay": 1, "discard": 2}.get(path.rsplit("/", 1)[-1], 0)],
        import_id=w.import_id,
        kind="ens",
        resource_id=_resource_id(method, path, w),
        patient_id=w.patient_id,
        care_plan_id=w.draft_plan_id if method == "PUT" else w.plan_id,
        role="BHCF",
        version_id=1,
        key="overdue-tasks",
    )
    kw: dict[str, Any] = {}
    if path in ("/fhir/Observation", "/fhir/QuestionnaireResponse", "/fhir/Consent") and method == "GET":
        kw["params"] = {"patient": str(w.patient_id)}
    elif (method, path) == ("GET", "/fhir/CarePlan"):
        kw["params"] = {"subject": str(w.patient_id)}
    elif (method, path) == ("GET", "/fhir/Patient"):
        kw["params"] = {"_id": str(w.patient_id)}
    bodies: dict[tuple[str, str], tuple[bytes, dict[str, str]]] = {
        ("POST", "/ingest/hl7v2"): (adt(control_id="MX-INGEST").encode(), {"Content-Type": "application/hl7-v2"}),
        ("POST", "/fhir/$process-message"): (json.dumps(davinci_bundle("admit")).encode(), FHIR_JSON),
        ("POST", "/fhir"): (encode(transaction(observation(ident="MX-T"))), FHIR_JSON),
        ("POST", "/fhir/Encounter"): (encode(fixture("encounter-inpatient-finished")), FHIR_JSON),
        ("POST", "/fhir/Observation"): (encode(observation(ident="MX-O")), FHIR_JSON),
        ("POST", "/fhir/Questionnaire"): (encode(fixture("questionnaire-phq9")), FHIR_JSON),
        ("POST", "/fhir/QuestionnaireResponse"): (encode(phq9_response(mrn="MX-QR")), FHIR_JSON),
        ("POST", "/fhir/Procedure"): (encode(med_rec_procedure(mrn="MX-P", ident="MX-P")), FHIR_JSON),
        ("POST", "/fhir/DocumentReference"): (encode(consult_note(mrn="MX-D", ident="MX-D")), FHIR_JSON),
        ("POST", "/fhir/CarePlan"): (encode(fhir_plan(w.patient_id)), FHIR_JSON),
        ("PUT", "/fhir/CarePlan/{resource_id}"): (encode(w.fhir_plan | {"title": "matrix"}), FHIR_JSON),
        ("PUT", "/fhir/Task/{resource_id}"): (encode(w.fhir_task | {"status": "in-progress"}), FHIR_JSON),
        ("PATCH", "/fhir/Task/{resource_id}"): (
            json.dumps([{"op": "replace", "path": "/status", "value": "in-progress"}]).encode(),
            {"Content-Type": "application/json-patch+json"},
        ),
    }
    if_match = {
        ("PUT", "/care-plans/{care_plan_id}"),
        ("POST", "/care-plans/{care_plan_id}/sign-off"),
        ("PUT", "/fhir/CarePlan/{resource_id}"),
        ("PUT", "/fhir/Task/{resource_id}"),
        ("PATCH", "/fhir/Task/{resource_id}"),
    }
    if (method, path) in bodies:
        kw["content"], kw["headers"] = bodies[(method, path)]
    elif path.endswith("/attempts"):
        kw["json"] = {"outcome": "no-answer"}
    elif path.endswith("/assign"):
        kw["json"] = {"owner": "someone-else"}
    elif path.endswith("/complete"):
        kw["json"] = {"outcome": "reached"}
    elif path.endswith("/cancel"):
        kw["json"] = {"reason": "matrix"}
    elif path.endswith("/business-status"):
        kw["json"] = {"business_status": "sent"}
    elif method in ("POST", "PUT") and "care-plans" in path and not path.endswith("/sign-off"):
        kw["json"] = PLAN | {"status": "draft"}
    elif path.endswith("/discard"):
        kw["json"] = {"reason": "matrix"}
    elif path.endswith("/consents"):
        kw["json"] = {"status": "active"}
    elif path == "/rosters/imports":
        kw["files"] = {"file": ("mx2.csv", csv_text([member(2)]).encode(), "text/csv")}
        kw["data"] = {"as_of": "2026-11-03"}
    if (method, path) in if_match:
        kw["headers"] = {**kw.get("headers", {}), "If-Match": 'W/"1"'}
    return {"method": method, "url": url, **kw}


async def call(client: httpx.AsyncClient, req: dict[str, Any], token: str | None) -> httpx.Response:
    req = dict(req)
    headers = dict(req.pop("headers", {}))
    if token is not None:
        headers.update(bearer(token))
    return await client.request(headers=headers, **req)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Own ENS topics: the matrix posts a Da Vinci notification, which must not outlive this test. The
    shipped rules: their evidence codes are what POST /fhir/Procedure and /fhir/DocumentReference take."""
    suffix = uuid.uuid4().hex[:8]
    topics = settings.topics.model_copy(update={"ens": f"ens-{suffix}", "ens_dead_letter": f"ens-dlq-{suffix}"})
    return settings.model_copy(update={"topics": topics, "rules_file": DEFAULT_RULES_FILE})


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
        checks: list[tuple[str, str | None, int, bool]] = [("no token", None, 401, False)]
        if access.denied is not None:
            denied = token(*access.denied, scopes=ALL_SCOPES)
            checks.append((f"roles {access.denied}", denied, access.denied_status, "PART2" in access.denied))
        if access.scope is not None:
            checks.append(("no scope for it", token(*access.ok, scopes=NO_USEFUL_SCOPE), 403, False))
        checks.append(
            (f"roles {access.ok}", token(*access.ok, scopes=ALL_SCOPES), access.ok_status, "PART2" in access.ok)
        )
        for label, bearer_token, expected, may_see_part2 in checks:
            response = await call(client, req, bearer_token)
            if response.status_code != expected:
                failures.append(
                    f"{method} {path} as {label}: {response.status_code} != {expected} {response.text[:200]}"
                )
            # Every body, not just the status: no id of the Part 2 seed for a caller without the permission.
            shown = [i for i in world.part2_ids if i in response.text or i in str(response.headers)]
            if shown and not may_see_part2:
                failures.append(f"{method} {path} as {label}: the body names Part 2 ids {shown}")
    assert not failures, "\n".join(failures)


@pytest.mark.api_only
async def test_public_routes_answer_without_a_token(runtime: Runtime, client: httpx.AsyncClient) -> None:
    for method, path in sorted(PUBLIC):
        response = await client.request(method, path)
        assert response.status_code == 200, (path, response.text[:200])


@pytest.mark.api_only
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


@pytest.mark.api_only
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
