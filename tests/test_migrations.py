"""Alembic migrations create exactly the SQLModel tables, on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlmodel import SQLModel

from sluice.db import models  # noqa: F401 - registers the tables
from sluice.db.engine import create_engine
from sluice.db.migrate import current_revision, upgrade
from sluice.settings import Settings
from tests.conftest import PG_URL, postgres_schema

TABLES = {
    "pipeline_configs",
    "pipeline_config_versions",
    "executions",
    "route_runs",
    "execution_logs",
    "message_lineage",
    "api_tokens",
    "idempotency_keys",
    "backfills",
    "backfill_runs",
    "node_profiles",
    "replay_lineage",
}


async def check(engine) -> None:  # type: ignore[no-untyped-def]
    await upgrade(engine)
    await upgrade(engine)  # idempotent: a second start applies nothing
    assert await current_revision(engine) == "0009"
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        diff = await conn.run_sync(
            lambda c: compare_metadata(
                MigrationContext.configure(c, opts={"compare_type": True}), SQLModel.metadata
            )
        )
    assert TABLES <= names
    assert diff == [], f"models and migrations differ: {diff}"


async def test_sqlite(tmp_path: Path) -> None:
    engine = create_engine(Settings(data_dir=tmp_path))
    try:
        await check(engine)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("driver", ["postgresql+asyncpg", "postgresql+psycopg"])
async def test_postgres(driver: str) -> None:
    async with postgres_schema() as schema:
        url = PG_URL.replace("postgresql+asyncpg", driver)
        engine = create_engine(Settings(database_url=url, database_schema=schema))
        try:
            await check(engine)
        finally:
            await engine.dispose()


async def test_duplicate_pipelines_are_renamed_before_the_identity_becomes_unique(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_engine(Settings(data_dir=tmp_path))
    try:
        await upgrade(engine, "0007")
        async with engine.begin() as conn:
            for i, updated in enumerate(["2026-01-01", "2026-03-01", "2026-02-01"]):
                await conn.execute(
                    text(
                        "INSERT INTO pipeline_configs (id, name, namespace, layer, version, yaml, config_hash, "
                        "created_at, updated_at) VALUES (:id, 'orders', 'shop', 'silver', 1, 'name: orders', 'h', "
                        ":t, :t)"
                    ),
                    {"id": f"0000000{i}-aaaa-bbbb-cccc-000000000000", "t": updated},
                )
        with caplog.at_level("WARNING", logger="sluice.migrations"):
            await upgrade(engine)
        async with engine.connect() as conn:
            names = dict((await conn.execute(text("SELECT id, name FROM pipeline_configs"))).all())
        assert names == {
            "00000001-aaaa-bbbb-cccc-000000000000": "orders",  # the most recently updated keeps the name
            "00000000-aaaa-bbbb-cccc-000000000000": "orders-00000000",
            "00000002-aaaa-bbbb-cccc-000000000000": "orders-00000002",
        }
        assert sum("is renamed" in r.getMessage() for r in caplog.records) == 2
    finally:
        await engine.dispose()
