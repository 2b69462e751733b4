"""Run Alembic from inside the application (CLI `migrate`, auto-migrate on start, tests)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import Base

REPO_ROOT = Path(__file__).resolve().parents[2]


def alembic_config() -> Config:
    cfg = Config(str(REPO_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    return cfg


async def recreate_schema(engine: AsyncEngine) -> None:
    """Drop everything and migrate to head: for test suites and benchmarks, never a live database."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("DROP SCHEMA public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
        else:
            await conn.run_sync(Base.metadata.drop_all)
            await conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    await upgrade_to_head(engine)


async def upgrade_to_head(engine: AsyncEngine) -> None:
    cfg = alembic_config()

    def _run(connection) -> None:  # type: ignore[no-untyped-def]
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")

    # No outer transaction: Alembic runs one per migration, and a migration may step outside it
    # (CREATE INDEX CONCURRENTLY, migrations/versions/0015_worklist_pool_index.py).
    async with engine.connect() as conn:
        await conn.run_sync(_run)
        await conn.commit()


async def schema_is_current(engine: AsyncEngine) -> bool:
    """True when the database is at this code's Alembic head, or at a revision this code does not know
    (a newer release migrated it: releases are backwards compatible for one release, so a rolled-back
    image may run on it). False while it is empty or behind: what a new release's pods wait for before
    they start (docs/operations.md, "Upgrades and migrations"). Read-only."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    heads = set(script.get_heads())
    known = {rev.revision for rev in script.walk_revisions()}

    def _current(connection) -> set[str]:  # type: ignore[no-untyped-def]
        return set(MigrationContext.configure(connection).get_current_heads())

    async with engine.connect() as conn:
        current = await conn.run_sync(_current)
    if current == heads:
        return True
    return bool(current) and not (current & known)
