"""The web UI over ASGI: sign-in and its cookie, CSRF, and that pages show exactly what the API would
(role/team scope, 42 CFR Part 2) and are audited like it. Real database and broker (conftest)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.api.app import create_app
from app.db.models import AuditEvent, Encounter, Patient, Task
from app.runtime import Runtime
from app.ui.session import SESSION_COOKIE, csrf_token
from tests.access_builder import record_consent, scope_task
from tests.ui_session import csrf_of, session_cookie, sign_in

pytestmark = pytest.mark.api_only  # seeds the database itself; no events are consumed


@pytest.fixture
async def browser_like(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """A client that keeps cookies, as a browser does (no redirects followed: tests look at them)."""
    app = create_app(runtime=runtime)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://carecoord.test") as c:
        yield c


async def seed(db: AsyncEngine, role: str = "PMC", team: str | None = "T1", **columns: object) -> Task:
    async with AsyncSession(db, expire_on_commit=False) as session, session.begin():
        patient = Patient(given_name="Rita", family_name=f"Roe-{uuid.uuid4().hex[:6]}")
        session.add(patient)
        await session.flush()
        task = scope_task(patient.id, role, team, **columns)
        session.add(task)
    return task


async def test_pages_need_a_session(browser_like: httpx.AsyncClient, db: AsyncEngine) -> None:
    task = await seed(db)
    for path in ("/ui/worklist", f"/ui/tasks/{task.id}", f"/ui/patients/{task.patient_id}", "/ui/supervisor"):
        response = await browser_like.get(path)
        assert response.status_code == 303 and response.headers["location"] == "/ui/sign-in", path
    response = await browser_like.post(f"/ui/tasks/{task.id}/claim", data={"version": "1"})
    assert response.status_code == 303 and response.headers["location"] == "/ui/sign-in"
    async with AsyncSession(db) as session:
        assert (await session.get(Task, task.id)).owner is None  # type: ignore[union-attr]


async def test_sign_in_keeps_the_verified_token_in_a_strict_httponly_cookie(
    browser_like: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    token = token_for("PMC", sub="pmc-1", teams=("T1",))
    response = await sign_in(browser_like, token)
    assert response.status_code == 303 and response.headers["location"] == "/ui/worklist"
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE))
    attributes = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "samesite=strict", "path=/ui"} <= attributes
    assert "secure" not in attributes  # development serves plain http
    assert session_cookie(browser_like) == token
    page = await browser_like.get("/ui/worklist")
    assert page.status_code == 200 and "pmc-1" in page.text
    assert (
        page.headers["cache-control"] == "no-store"
        and "frame-ancestors 'none'" in page.headers["content-security-policy"]
    )
    signed_out = await browser_like.post("/ui/sign-out", data={"csrf": csrf_of(page)})
    assert signed_out.status_code == 303 and session_cookie(browser_like) is None
    assert (await browser_like.get("/ui/worklist")).status_code == 303


async def test_a_bad_or_expired_token_is_refused_at_sign_in_and_ends_a_session(
    browser_like: httpx.AsyncClient, settings: object, token_for: Callable[..., str]
) -> None:
    refused = await sign_in(browser_like, "not-a-token")
    assert refused.status_code == 401 and "not accepted" in refused.text
    assert session_cookie(browser_like) is None
    expired = jwt.encode(
        {"sub": "x", "roles": ["PMC"], "teams": [], "iss": "carecoord", "aud": "carecoord", "exp": 1},
        "wrong-secret-" + "y" * 40,
        algorithm="HS256",
    )
    assert (await sign_in(browser_like, expired)).status_code == 401
    browser_like.cookies.set(SESSION_COOKIE, expired, domain="carecoord.test", path="/ui")
    response = await browser_like.get("/ui/worklist")
    assert response.status_code == 303 and response.headers["location"] == "/ui/sign-in"


async def test_sign_in_form_posted_from_elsewhere_is_refused(browser_like: httpx.AsyncClient, token_for) -> None:
    # No pre-session cookie and nonce: what a cross-site form post (login CSRF) looks like.
    response = await browser_like.post("/ui/sign-in", data={"mode": "token", "token": token_for("PMC")})
    assert response.status_code == 403 and session_cookie(browser_like) is None


async def test_development_sign_in_mints_a_token_like_carecoord_token(
    browser_like: httpx.AsyncClient, runtime: Runtime
) -> None:
    form = await browser_like.get("/ui/sign-in")
    nonce = form.text.split('name="sign_in" value="')[1].split('"')[0]
    response = await browser_like.post(
        "/ui/sign-in",
        data={"sign_in": nonce, "mode": "development", "user": "dev-1", "roles": "PMC, SUPERVISOR", "teams": "T1"},
    )
    assert response.status_code == 303
    claims = jwt.decode(session_cookie(browser_like), options={"verify_signature": False})  # type: ignore[arg-type]
    assert claims["sub"] == "dev-1" and claims["roles"] == ["PMC", "SUPERVISOR"] and claims["teams"] == ["T1"]
    assert "user/Task.rus" in claims["scope"].split()  # the roles' default scopes, as the CLI grants


async def test_production_offers_no_development_sign_in_and_sets_secure_cookies(
    runtime: Runtime, token_for: Callable[..., str]
) -> None:
    runtime.settings.environment = "production"
    transport = httpx.ASGITransport(app=create_app(runtime=runtime))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="https://carecoord.test") as browser_like:
            form = await browser_like.get("/ui/sign-in")
            assert "Development sign-in" not in form.text
            nonce = form.text.split('name="sign_in" value="')[1].split('"')[0]
            minted = await browser_like.post(
                "/ui/sign-in", data={"sign_in": nonce, "mode": "development", "user": "x", "roles": "SUPERVISOR"}
            )
            assert minted.status_code == 403 and session_cookie(browser_like) is None
            form = await browser_like.get("/ui/sign-in")
            nonce = form.text.split('name="sign_in" value="')[1].split('"')[0]
            signed = await browser_like.post(
                "/ui/sign-in",
                data={"sign_in": nonce, "mode": "token", "token": token_for("PMC", teams=("T1",))},
            )
    finally:
        runtime.settings.environment = "development"
    assert signed.status_code == 303
    cookie = next(c for c in signed.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE))
    assert "secure" in {part.strip().lower() for part in cookie.split(";")}


async def test_posts_without_this_sessions_csrf_token_change_nothing(
    browser_like: httpx.AsyncClient, db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    task = await seed(db)
    token = token_for("PMC", sub="pmc-1", teams=("T1",))
    await sign_in(browser_like, token)
    other_session = csrf_token(token_for("PMC", sub="pmc-2", teams=("T1",)))
    for data in ({"version": "1"}, {"version": "1", "csrf": "0" * 64}, {"version": "1", "csrf": other_session}):
        refused = await browser_like.post(f"/ui/tasks/{task.id}/claim", data=data)
        assert refused.status_code == 403 and "CSRF" in refused.text
    async with AsyncSession(db) as session:
        assert (await session.get(Task, task.id)).owner is None  # type: ignore[union-attr]
    page = await browser_like.get(f"/ui/tasks/{task.id}")
    claimed = await browser_like.post(f"/ui/tasks/{task.id}/claim", data={"version": "1", "csrf": csrf_of(page)})
    assert claimed.status_code == 303
    async with AsyncSession(db) as session:
        assert (await session.get(Task, task.id)).owner == "pmc-1"  # type: ignore[union-attr]


async def test_pages_show_only_the_callers_scope_as_the_api_does(
    browser_like: httpx.AsyncClient, client: httpx.AsyncClient, db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    mine = await seed(db, "PMC", "T1")
    other_role = await seed(db, "RN", "T1")
    other_team = await seed(db, "PMC", "T2")
    token = token_for("PMC", sub="pmc-1", teams=("T1",))
    await sign_in(browser_like, token)
    page = await browser_like.get("/ui/worklist")
    shown = set(page.text.split('data-task-id="')[1:])
    shown_ids = {s.split('"')[0] for s in shown}
    api = await client.get("/tasks", headers={"Authorization": f"Bearer {token}"})
    assert shown_ids == {item["id"] for item in api.json()["items"]} == {str(mine.id)}
    for hidden in (other_role, other_team):
        assert (await browser_like.get(f"/ui/tasks/{hidden.id}")).status_code == 404
        assert (await browser_like.get(f"/ui/patients/{hidden.patient_id}")).status_code == 404
        page = await browser_like.get(f"/ui/tasks/{mine.id}")
        refused = await browser_like.post(f"/ui/tasks/{hidden.id}/claim", data={"csrf": csrf_of(page)})
        assert refused.status_code == 404
    assert (await browser_like.get("/ui/worklist", params={"role": "RN"})).status_code == 403
    assert (await browser_like.get("/ui/supervisor")).status_code == 403  # not a supervisor
    assert (await browser_like.get(f"/ui/patients/{mine.patient_id}")).status_code == 200


async def test_part2_records_are_hidden_without_permission_and_consent(
    browser_like: httpx.AsyncClient, db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    open_task = await seed(db, "PMC", "T1")
    async with AsyncSession(db, expire_on_commit=False) as session, session.begin():
        encounter = Encounter(
            patient_id=open_task.patient_id, facility="DETOX", status="finished", part2=True,
            admit_at=datetime(2026, 11, 1, tzinfo=UTC), hospital_service="SUD-UNIT-X",
        )  # fmt: skip
        session.add(encounter)
        await session.flush()
        part2 = scope_task(
            open_task.patient_id, "PMC", "T1", type="sud-follow-up", part2=True, encounter_id=encounter.id
        )
        session.add(part2)
    await sign_in(browser_like, token_for("PMC", sub="pmc-1", teams=("T1",)))
    worklist = await browser_like.get("/ui/worklist")
    patient = await browser_like.get(f"/ui/patients/{open_task.patient_id}")
    assert str(part2.id) not in worklist.text
    assert "sud-follow-up" not in patient.text and "SUD-UNIT-X" not in patient.text
    assert (await browser_like.get(f"/ui/tasks/{part2.id}")).status_code == 404

    browser_like.cookies.clear()
    await sign_in(browser_like, token_for("PMC", "PART2", sub="pmc-2", teams=("T1",)))
    no_consent = await browser_like.get(f"/ui/patients/{open_task.patient_id}")
    assert "sud-follow-up" not in no_consent.text and "SUD-UNIT-X" not in no_consent.text
    await record_consent(db, open_task.patient_id)
    consented = await browser_like.get(f"/ui/patients/{open_task.patient_id}")
    assert "sud-follow-up" in consented.text and "SUD-UNIT-X" in consented.text
    assert (await browser_like.get(f"/ui/tasks/{part2.id}")).status_code == 200


async def test_a_stale_action_is_refused_with_a_clear_message(
    browser_like: httpx.AsyncClient, db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    task = await seed(db)
    await sign_in(browser_like, token_for("PMC", sub="pmc-1", teams=("T1",)))
    page = await browser_like.get(f"/ui/tasks/{task.id}")
    csrf = csrf_of(page)
    first = await browser_like.post(f"/ui/tasks/{task.id}/attempts", data={"csrf": csrf, "version": "1",
                                                                           "outcome": "no-answer"})  # fmt: skip
    assert first.status_code == 303
    stale = await browser_like.post(f"/ui/tasks/{task.id}/claim", data={"csrf": csrf, "version": "1"})
    assert stale.status_code == 303 and stale.headers["location"] == f"/ui/tasks/{task.id}"
    shown = await browser_like.get(stale.headers["location"])
    assert "Someone changed this task after you opened it" in shown.text
    async with AsyncSession(db) as session:
        assert (await session.get(Task, task.id)).owner is None  # type: ignore[union-attr]


async def test_ui_reads_and_actions_are_audited_like_the_api(
    browser_like: httpx.AsyncClient, db: AsyncEngine, token_for: Callable[..., str]
) -> None:
    task = await seed(db)
    await sign_in(browser_like, token_for("PMC", sub="pmc-1", teams=("T1",)))
    page = await browser_like.get(f"/ui/tasks/{task.id}")
    await browser_like.post(f"/ui/tasks/{task.id}/claim", data={"csrf": csrf_of(page), "version": "1"})
    await browser_like.get(f"/ui/patients/{task.patient_id}")
    async with AsyncSession(db) as session:
        rows = (await session.execute(select(AuditEvent).where(AuditEvent.actor == "pmc-1"))).scalars().all()
    requests = [r.request for r in rows]
    assert any(r.startswith(f"GET /ui/tasks/{task.id}") for r in requests)
    assert any(r.startswith(f"POST /ui/tasks/{task.id}/claim") for r in requests)
    assert any(r.startswith(f"GET /ui/patients/{task.patient_id}") for r in requests)
    missing = [(r.resource_type, r.request) for r in rows if str(task.patient_id) not in (r.patient_ids or [])]
    assert not missing


async def test_no_patient_data_in_ui_urls(browser_like: httpx.AsyncClient, db: AsyncEngine, token_for) -> None:
    task = await seed(db, due_at=datetime.now(UTC) + timedelta(days=1))
    await sign_in(browser_like, token_for("PMC", sub="pmc-1", teams=("T1",)))
    page = await browser_like.get("/ui/worklist")
    async with AsyncSession(db) as session:
        patient = await session.get(Patient, task.patient_id)
    assert patient is not None and patient.family_name in page.text
    links = [part.split('"')[0] for part in page.text.split('href="')[1:]] + [
        part.split('"')[0] for part in page.text.split('action="')[1:]
    ]
    assert links and not any(patient.family_name in link or "Rita" in link for link in links)
