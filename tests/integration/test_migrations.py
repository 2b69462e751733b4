"""Alembic owns the schema: a fresh database migrated to head must equal the ORM models exactly."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.migrate import alembic_config, schema_is_current, upgrade_to_head
from app.db.models import Base
from app.db.session import create_engine


async def _diff(engine: AsyncEngine) -> list:
    def _compare(conn) -> list:  # type: ignore[no-untyped-def]
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "render_as_batch": True})
        return compare_metadata(ctx, Base.metadata)

    async with engine.connect() as conn:
        return await conn.run_sync(_compare)


async def test_models_and_migrations_agree(migrated_engine: AsyncEngine) -> None:
    assert await _diff(migrated_engine) == []


async def test_downgrade_to_base_and_back(migrated_engine: AsyncEngine) -> None:
    cfg = alembic_config()

    def _run(conn, target: str, upgrade: bool) -> list[str]:  # type: ignore[no-untyped-def]
        cfg.attributes["connection"] = conn
        (command.upgrade if upgrade else command.downgrade)(cfg, target)
        return inspect(conn).get_table_names()

    async with migrated_engine.connect() as conn:
        tables = await conn.run_sync(_run, "base", False)
        await conn.commit()
    assert set(tables) <= {"alembic_version"}
    async with migrated_engine.connect() as conn:
        tables = await conn.run_sync(_run, "head", True)
        await conn.commit()
    assert {t.name for t in Base.metadata.sorted_tables} <= set(tables)
    assert await _diff(migrated_engine) == []


async def test_schema_gate_waits_for_head_and_tolerates_a_newer_release(tmp_path: Path) -> None:
    """`carecoord migrate --wait` (the pods' initContainer): not before the migration, yes after it, and
    yes on a revision from a newer release, so a rolled-back image can start."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'gate.db'}")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("SELECT 1"))
        assert not await schema_is_current(engine)
        await upgrade_to_head(engine)
        assert await schema_is_current(engine)
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
        assert await schema_is_current(engine)
        first = next(iter(ScriptDirectory.from_config(alembic_config()).walk_revisions())).down_revision
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = :rev"), {"rev": first})
        assert not await schema_is_current(engine), "an older known revision: still waiting"
    finally:
        await engine.dispose()
