"""Every web UI route x callers, as tests/integration/test_authorization_matrix.py does for the API:
no session -> the sign-in page (303), a role or team out of scope -> 403/404, the right role without
the SMART scope -> 403, the right role and scope -> 200 (a page) or 303 (a form's redirect). Every
POST carries the session's CSRF token, so what is tested is authorization, not CSRF (test_ui_pages)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.api.app import create_app
from app.api.auth import mint_token
from app.db.models import Patient
from app.runtime import Runtime
from app.settings import Settings
from app.ui.session import SESSION_COOKIE, csrf_token
from tests.access_builder import scope_task

pytestmark = pytest.mark.api_only  # seeds the database itself; no events are consumed

ALL_SCOPES = ["user/*.cruds"]
NO_USEFUL_SCOPE = ["user/Nothing.cruds"]

UI_PUBLIC = {("GET", "/ui/sign-in"), ("POST", "/ui/sign-in"), ("GET", "/ui/static")}


@dataclass(frozen=True)
class UiAccess:
    ok: tuple[str, ...]
    ok_status: int
    denied: tuple[str, ...] | None
    denied_status: int
    scoped: bool = True  # the right role without any useful SMART scope is refused (403)


UI_MATRIX: dict[tuple[str, str], UiAccess] = {
    ("GET", "/ui"): UiAccess(("BHCF",), 303, None, 0, scoped=False),  # a redirect to the worklist
    ("POST", "/ui/sign-out"): UiAccess(("BHCF",), 303, None, 0, scoped=False),
    ("GET", "/ui/worklist"): UiAccess(("BHCF",), 200, None, 0),
    ("GET", "/ui/tasks/{task_id}"): UiAccess(("BHCF",), 200, ("PMC",), 404),
    ("POST", "/ui/tasks/{task_id}/claim"): UiAccess(("BHCF",), 303, ("PMC",), 404),
    ("POST", "/ui/tasks/{task_id}/release"): UiAccess(("BHCF",), 303, ("PMC",), 404),
    ("POST", "/ui/tasks/{task_id}/complete"): UiAccess(("BHCF",), 303, ("PMC",), 404),
    ("POST", "/ui/tasks/{task_id}/cancel"): UiAccess(("BHCF",), 303, ("PMC",), 404),
    ("POST", "/ui/tasks/{task_id}/attempts"): UiAccess(("BHCF",), 303, ("PMC",), 404),
    # a facilitator's assign is refused by the API's rule (403), shown on the page it returns to
    ("POST", "/ui/tasks/{task_id}/assign"): UiAccess(("SUPERVISOR",), 303, None, 0),
    ("GET", "/ui/patients/{patient_id}"): UiAccess(("BHCF",), 200, ("PMC",), 404, scoped=False),
    ("POST", "/ui/patients/{patient_id}/care-plans"): UiAccess(("BHCF",), 303, ("INTEGRATION",), 403),
    ("POST", "/ui/care-plans/{care_plan_id}"): UiAccess(("BHCF",), 303, ("INTEGRATION",), 403),
    ("POST", "/ui/care-plans/{care_plan_id}/sign-off"): UiAccess(("PCP",), 303, ("BHCF",), 403),
    ("GET", "/ui/supervisor"): UiAccess(("SUPERVISOR",), 200, ("BHCF",), 403),
    ("GET", "/ui/dashboard"): UiAccess(("BHCF",), 200, ("NOROLE",), 403),
    ("GET", "/ui/dashboard/measures.csv"): UiAccess(("BHCF",), 200, None, 0),
    ("GET", "/ui/dashboard/{key}/{part}"): UiAccess(("BHCF",), 200, None, 0),
    ("GET", "/ui/dashboard/{key}/{part}.csv"): UiAccess(("BHCF",), 200, None, 0),
}


@pytest.fixture
async def ui(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(runtime=runtime)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://carecoord.test") as c:
        yield c


@dataclass
class World:
    patient_id: uuid.UUID
    tasks: dict[str, uuid.UUID]
    plan_id: uuid.UUID
    plan_version: int


async def build_world(db: AsyncEngine, client: httpx.AsyncClient, settings: Settings) -> World:
    async with AsyncSession(db, expire_on_commit=False) as session, session.begin():
        patient = Patient(family_name="MATRIX")
        session.add(patient)
        await session.flush()
        tasks = {
            name: scope_task(patient.id, "BHCF", "T1", status=status, owner=owner)
            for name, status, owner in (
                ("read", "ready", None), ("claim", "ready", None), ("release", "ready", "matrix-user"),
                ("complete", "in-progress", None), ("cancel", "ready", None), ("attempts", "ready", None),
                ("assign", "ready", None),
            )
        }  # fmt: skip
        session.add_all([*tasks.values(), scope_task(patient.id, "PCP", "T1")])
    token = mint_token(settings, "matrix-user", ["BHCF"], ["T1"], 600, scopes=ALL_SCOPES)
    created = await client.post(
        f"/patients/{patient.id}/care-plans",
        json={"title": "Matrix", "goals": [{"description": "Walk"}]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert created.status_code == 201, created.text
    return World(patient.id, {n: t.id for n, t in tasks.items()}, uuid.UUID(created.json()["id"]), 1)


def ui_request(method: str, path: str, w: World) -> dict[str, Any]:
    action = path.rsplit("/", 1)[-1]
    url = path.format(
        task_id=w.tasks.get(action, w.tasks["read"]) if method == "POST" else w.tasks["read"],
        patient_id=w.patient_id,
        care_plan_id=w.plan_id,
        key="post-discharge-contact-7d",
        part="numerator",
    )
    data: dict[str, str] = {"next": "/ui/worklist"}
    if action == "complete":
        data["outcome"] = "reached"
    elif action == "cancel":
        data["reason"] = "matrix"
    elif action == "attempts":
        data["outcome"] = "no-answer"
    elif action == "assign":
        data["owner"] = "someone-else"
    elif path.endswith("/care-plans"):  # a second plan: a draft (the patient has an active one)
        data.update({"title": "Matrix draft", "status": "draft", "goals-0-description": "Walk daily"})
    elif path.endswith("{care_plan_id}"):
        data.update({"title": "Matrix plan", "goals-0-description": "Walk daily", "version": "0"})
    elif action == "sign-off":
        data["version"] = "0"
    return {"method": method, "url": url, "data": data if method == "POST" else None}


async def call(client: httpx.AsyncClient, req: dict[str, Any], token: str | None, version: int) -> httpx.Response:
    client.cookies.clear()
    data = dict(req["data"]) if req["data"] is not None else None
    if token is not None:
        client.cookies.set(SESSION_COOKIE, token, domain="carecoord.test", path="/ui")
        if data is not None:
            data["csrf"] = csrf_token(token)
    if data is not None and data.get("version") == "0":  # the plan's version when the call is made
        data["version"] = str(version)
    return await client.request(req["method"], req["url"], data=data)


def test_every_ui_route_is_in_the_matrix(runtime: Runtime) -> None:
    from tests.integration.test_authorization_matrix import served_routes

    served = {r for r in served_routes(create_app(runtime=runtime)) if r[1].startswith("/ui")}
    assert served - UI_PUBLIC - set(UI_MATRIX) == set(), "UI routes without a matrix entry"
    assert (set(UI_MATRIX) | UI_PUBLIC) - served == set(), "matrix entries for UI routes that no longer exist"


async def test_ui_authorization_matrix(
    runtime: Runtime, ui: httpx.AsyncClient, client: httpx.AsyncClient, db: AsyncEngine, settings: Settings
) -> None:
    world = await build_world(db, client, settings)

    def token(*roles: str, scopes: list[str] = ALL_SCOPES) -> str:
        return mint_token(settings, "matrix-user", list(roles), ["T1"], 600, scopes=scopes)

    failures: list[str] = []
    for (method, path), access in UI_MATRIX.items():
        req = ui_request(method, path, world)
        checks: list[tuple[str, str | None, int]] = [("no session", None, 303)]
        if access.denied is not None:
            roles = tuple(r for r in access.denied if r != "NOROLE")
            checks.append((f"roles {access.denied}", token(*roles), access.denied_status))
        if access.scoped:
            checks.append(("no scope for it", token(*access.ok, scopes=NO_USEFUL_SCOPE), 403))
        checks.append((f"roles {access.ok}", token(*access.ok), access.ok_status))
        for label, session_token, expected in checks:
            response = await call(ui, req, session_token, 2 if "sign-off" in path else 1)
            where = response.headers.get("location", "")
            if response.status_code != expected or (label == "no session" and where != "/ui/sign-in"):
                failures.append(f"{method} {path} as {label}: {response.status_code} != {expected} {where}")
            flash = unquote(response.cookies.get("carecoord_flash") or "")
            if expected == 303 and label != "no session" and flash.startswith("error:"):
                failures.append(f"{method} {path} as {label}: refused: {flash}")
    assert not failures, "\n".join(failures)
