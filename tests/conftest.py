"""Shared fixtures: one real Tansu broker per session, a real database (SQLite by default,
PostgreSQL when CARECOORD_DATABASE_URL says so), fresh topics and clean tables per test.

The suite runs in two pytest-xdist workers (pyproject addopts). Each worker is a session of its own:
its own broker, its own SQLite file, and on PostgreSQL its own database (`<name>_<worker>`, set in
the environment at configure time so subprocesses and Settings() read the same one)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api.app import create_app
from app.api.auth import mint_token
from app.db.migrate import recreate_schema
from app.db.models import Base
from app.db.session import create_engine
from app.messaging.embedded_broker import EmbeddedBroker
from app.runtime import Runtime
from app.settings import Settings, Topics

T = TypeVar("T")

TEST_JWT_SECRET = "test-secret-" + "x" * 40


def pytest_configure(config: pytest.Config) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    url = os.environ.get("CARECOORD_DATABASE_URL", "")
    if worker and url.startswith("postgresql"):
        os.environ["CARECOORD_DATABASE_URL"] = asyncio.run(database_beside(url, worker))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The SQLite pass leaves out the PostgreSQL-only tests (marker `postgresql`) instead of skipping
    them: the PostgreSQL pass of .ci/run is where they run."""
    if os.environ.get("CARECOORD_DATABASE_URL", "").startswith("postgresql"):
        return
    kept = [item for item in items if not item.get_closest_marker("postgresql")]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


async def database_beside(url: str, suffix: str) -> str:
    """`url` with the database `<name>_<suffix>` on the same PostgreSQL server, created when missing."""
    parsed = make_url(url)
    name = f"{parsed.database}_{suffix}"
    admin = create_engine(url)
    try:
        async with admin.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            if not await conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}):
                await conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await admin.dispose()
    return parsed.set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("carecoord")


@pytest.fixture(scope="session")
async def broker(session_dir: Path) -> AsyncIterator[EmbeddedBroker]:
    b = EmbeddedBroker(log_file=session_dir / "broker.log")
    await b.start()
    yield b
    await b.stop()


@pytest.fixture(scope="session")
def database_url(session_dir: Path) -> str:
    return os.environ.get("CARECOORD_DATABASE_URL") or f"sqlite+aiosqlite:///{session_dir / 'test.db'}"


@pytest.fixture(scope="session")
async def migrated_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    await recreate_schema(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
async def db(migrated_engine: AsyncEngine) -> AsyncEngine:
    async with migrated_engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            await conn.execute(table.delete())
    return migrated_engine


CONTACT_ONLY_RULES = Path(__file__).parent / "fixtures" / "rules_contact_only.toml"


@pytest.fixture
def settings(tmp_path: Path, broker: EmbeddedBroker, database_url: str) -> Settings:
    suffix = uuid.uuid4().hex[:8]
    return Settings(
        var_dir=tmp_path,
        database_url=database_url,
        auto_migrate=False,
        kafka_bootstrap_servers=broker.bootstrap_servers,
        kafka_partitions=3,
        topics=Topics(
            adt=f"adt-{suffix}",
            adt_dead_letter=f"adt-dlq-{suffix}",
            fhir=f"fhir-{suffix}",
            fhir_dead_letter=f"fhir-dlq-{suffix}",
            task_events=f"task-events-{suffix}",
        ),
        consumer_group=f"g-{suffix}",
        consumer_session_timeout_ms=2000,
        consumer_heartbeat_interval_ms=500,
        consumer_poll_timeout_ms=100,
        consumer_db_retry_initial_s=0.1,
        jwt_secret=TEST_JWT_SECRET,
        facility_timezone="America/New_York",
        # Most tests are about ingestion and task mechanics, not attribution: they raise tasks for any
        # patient. Attribution tests turn this back on.
        require_attribution=False,
        rules_file=CONTACT_ONLY_RULES,
    )


async def wait_until_assigned(runtime: Runtime, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(c._consumer.assignment() for c in runtime.consumers):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("consumer got no partitions")


@pytest.fixture
async def runtime(request: pytest.FixtureRequest, settings: Settings, db: AsyncEngine) -> AsyncIterator[Runtime]:
    consumers = request.node.get_closest_marker("api_only") is None
    async with Runtime(settings, run_consumers=consumers) as rt:
        if consumers:
            await wait_until_assigned(rt)
        yield rt


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(runtime=runtime)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://carecoord.test") as c:
        yield c


@pytest.fixture
def token_for(settings: Settings) -> Callable[..., str]:
    def _mint(*roles: str, sub: str = "tester", teams: tuple[str, ...] = ()) -> str:
        return mint_token(settings, sub, list(roles), list(teams), 600)

    return _mint


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def eventually(probe: Callable[[], Awaitable[T]], timeout_s: float = 20, interval_s: float = 0.1) -> T:
    """Poll until `probe` returns a truthy value; the consumer is asynchronous by design."""
    deadline = time.monotonic() + timeout_s
    last: T = await probe()
    while not last and time.monotonic() < deadline:
        await asyncio.sleep(interval_s)
        last = await probe()
    return last
