"""How fast `GET /api/v1/executions`, `/api/dashboard` and `/api/runs/calendar` stay with 100,000
executions, on SQLite and PostgreSQL.

Inserts N execution records of four pipelines, then times the list service (the exact query behind
the executions API and the runs facade: filter + sort + page + total) for typical filters, and the
dashboard and calendar services (seed 002). To show what the
indexes buy, the same queries run again with the secondary indexes dropped; the figures are
printed as ratios measured in the same run.

    python bench/bench_list.py                 # SQLite, 100,000 rows
    python bench/bench_list.py --postgres      # also PostgreSQL (127.0.0.1:5432, a throwaway schema)
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from sluice.db.engine import create_engine, session_factory
from sluice.db.migrate import upgrade
from sluice.db.models import ExecutionRecord, PipelineConfigRecord
from sluice.ids import uuid7
from sluice.services.executions import ExecutionFilters, ExecutionService
from sluice.services.insights import InsightService
from sluice.settings import Settings

CONFIG_IDS = {}  # pipeline -> config id, filled by fill()
PIPELINES = [
    ("shop", "silver", "orders"),
    ("shop", "gold", "revenue"),
    ("docs", "bronze", "ingest"),
    ("ml", "silver", "embed"),
]
STATUSES = ["completed"] * 85 + ["failed"] * 8 + ["cancelled"] * 3 + ["running"] * 2 + ["interrupted"] * 2
CASES: list[tuple[str, ExecutionFilters, str]] = [
    ("newest page", ExecutionFilters(), "created_at"),
    ("status=failed", ExecutionFilters(statuses=["failed"]), "created_at"),
    (
        "pipeline shop.silver.orders",
        ExecutionFilters(namespace="shop", layer="silver", pipeline="orders"),
        "created_at",
    ),
    ("trigger=schedule", ExecutionFilters(trigger="schedule:hourly"), "created_at"),
    ("tag lookup", ExecutionFilters(tag="tag-77777"), "created_at"),
    ("slowest first", ExecutionFilters(), "duration_ms"),
    ("last 24h, failed", ExecutionFilters(statuses=["failed"]), "created_at"),
]


async def fill(engine: AsyncEngine, rows: int) -> None:
    start = datetime.now(UTC) - timedelta(days=90)
    rnd = random.Random(7)
    batch: list[dict[str, Any]] = []
    async with engine.begin() as conn:
        for ns, layer, name in PIPELINES:
            CONFIG_IDS[name] = str(uuid.uuid4())
            await conn.execute(
                PipelineConfigRecord.__table__.insert(),  # type: ignore[attr-defined]
                {
                    "id": CONFIG_IDS[name],
                    "name": name,
                    "namespace": ns,
                    "layer": layer,
                    "version": 1,
                    "yaml": f"name: {name}",
                    "config_hash": "0" * 64,
                    "created_at": start,
                    "updated_at": start,
                },
            )
    for i in range(rows):
        ns, layer, name = rnd.choice(PIPELINES)
        created = start + timedelta(seconds=i * 77)
        status = rnd.choice(STATUSES)
        duration = None if status == "running" else rnd.randint(50, 600_000)
        execution_id = str(uuid7())
        batch.append(
            {
                "id": execution_id,
                "config_id": CONFIG_IDS[name],
                "config_version": 1,
                "config_yaml": "name: x",
                "config_hash": "0" * 64,
                "pipeline": name,
                "namespace": ns,
                "layer": layer,
                "status": status,
                "trigger": rnd.choice(["manual", "manual", "schedule:hourly", "replay"]),
                "tag": f"tag-{i}" if i % 10 == 7 else None,
                "workflow_id": f"sluice-exec-{execution_id}",
                "task_queue": "sluice",
                "messages_processed": 0,
                "objects_written": 0,
                "created_at": created,
                "started_at": created,
                "completed_at": None if duration is None else created + timedelta(milliseconds=duration),
                "duration_ms": duration,
            }
        )
        if len(batch) == 5000:
            async with engine.begin() as conn:
                await conn.execute(ExecutionRecord.__table__.insert(), batch)  # type: ignore[attr-defined]
            batch = []
    if batch:
        async with engine.begin() as conn:
            await conn.execute(ExecutionRecord.__table__.insert(), batch)  # type: ignore[attr-defined]
    # Fresh statistics and visibility map, as autovacuum would leave them.
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM ANALYZE" if engine.dialect.name == "postgresql" else "ANALYZE"))


async def measure(service: ExecutionService, insights: InsightService, repeats: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for label, call in (
        ("dashboard (seed 002)", insights.dashboard),
        ("calendar, 90 days", lambda: insights.calendar(90)),
    ):
        timings = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            await call()
            timings.append((time.perf_counter() - t0) * 1000)
        out[label] = statistics.median(timings)
    for label, filters, sort in CASES:
        if label.startswith("last 24h"):
            filters.created_from = datetime.now(UTC) - timedelta(days=1)
        timings = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            page = await service.list(filters, sort=sort, order="desc", limit=50, offset=0)
            timings.append((time.perf_counter() - t0) * 1000)
        assert page.total >= len(page.items)
        out[label] = statistics.median(timings)
    return out


async def drop_secondary_indexes(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        names = await conn.run_sync(
            lambda c: [i["name"] for i in inspect(c).get_indexes("executions") if not i.get("unique")]
        )
        for name in names:
            await conn.execute(text(f'DROP INDEX IF EXISTS "{name}"'))


async def run_backend(label: str, settings: Settings, rows: int, repeats: int) -> dict[str, Any]:
    engine = create_engine(settings)
    await upgrade(engine)
    t0 = time.perf_counter()
    await fill(engine, rows)
    fill_s = time.perf_counter() - t0
    sessions = session_factory(engine)
    service = ExecutionService(sessions, None, settings, None, None)  # type: ignore[arg-type]
    insights = InsightService(sessions)
    indexed = await measure(service, insights, repeats)
    await drop_secondary_indexes(engine)
    plain = await measure(service, insights, max(3, repeats // 4))
    await engine.dispose()
    return {
        "backend": label,
        "rows": rows,
        "fill_seconds": round(fill_s, 1),
        "indexed_ms": indexed,
        "unindexed_ms": plain,
    }


def print_report(result: dict[str, Any]) -> None:
    print(f"\n{result['backend']}: {result['rows']:,} executions (inserted in {result['fill_seconds']}s)")
    print(f"  {'query':<32} {'indexed ms':>11} {'no index ms':>12} {'speed-up':>9}")
    for label, ms in result["indexed_ms"].items():
        plain = result["unindexed_ms"][label]
        print(f"  {label:<32} {ms:>11.1f} {plain:>12.1f} {plain / ms:>8.1f}x")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--postgres", action="store_true", help="also run on PostgreSQL at 127.0.0.1:5432")
    parser.add_argument("--pg-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    print(f"list executions benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    with tempfile.TemporaryDirectory() as tmp:
        result = await run_backend("SQLite", Settings(data_dir=Path(tmp)), args.rows, args.repeats)
        print_report(result)
    if args.postgres:
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(Settings(), args.pg_url)
        async with admin.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        try:
            settings = Settings(database_url=args.pg_url, database_schema=schema)
            print_report(await run_backend("PostgreSQL", settings, args.rows, args.repeats))
        finally:
            async with admin.begin() as conn:
                await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            await admin.dispose()


if __name__ == "__main__":
    asyncio.run(main())
