"""Alembic owns the schema: a fresh database migrated to head must equal the ORM models exactly."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.migrate import alembic_config
from app.db.models import Base


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

    async with migrated_engine.begin() as conn:
        tables = await conn.run_sync(_run, "base", False)
    assert set(tables) <= {"alembic_version"}
    async with migrated_engine.begin() as conn:
        tables = await conn.run_sync(_run, "head", True)
    assert {t.name for t in Base.metadata.sorted_tables} <= set(tables)
    assert await _diff(migrated_engine) == []
