"""Profiling a node whose outputs total 1,000,000 rows: seconds and peak memory.

Writes N rows as Parquet (or CSV) objects under one route's stage in local storage, then times
`GET /api/runs/{id}/nodes/{node}/profile`'s service (decode every object, per-column statistics)
against a plain baseline measured in the same run: reading the same files with pyarrow alone.
Peak memory is Arrow's allocator high-water mark plus the process RSS growth.

    python bench/bench_profile.py                      # 1,000,000 rows in 20 Parquet objects
    python bench/bench_profile.py --format csv --rows 200000
"""

from __future__ import annotations

import argparse
import asyncio
import io
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from sluice.db.engine import create_engine, session_factory
from sluice.db.migrate import upgrade
from sluice.db.models import ExecutionRecord
from sluice.services.node_data import NodeDataService
from sluice.settings import Settings
from sluice.storage import open_storage
from sluice.tabular import decode

YAML = "name: bench\nroutes:\n  - {name: write, handler: noop, stage: rows}\n"


def part(start: int, rows: int) -> pa.Table:
    ids = pa.array(range(start, start + rows), pa.int64())
    return pa.table(
        {
            "id": ids,
            "name": pa.array([None if i % 10 == 0 else f"user {i}" for i in range(start, start + rows)]),
            "score": pa.array([(i % 1000) / 7 for i in range(start, start + rows)]),
            "country": pa.array(["FR", "DE", "US", "JP", "BR"][i % 5] for i in range(start, start + rows)),
            "ts": pa.array([datetime(2024, 1, 1, tzinfo=UTC)] * rows, pa.timestamp("s", tz="UTC")),
        }
    )


def encode(table: pa.Table, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "parquet":
        pq.write_table(table, buf)
    else:
        pa_csv.write_csv(table, buf)
    return buf.getvalue()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--parts", type=int, default=20)
    parser.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp))
        engine = create_engine(settings)
        await upgrade(engine)
        storage = open_storage(settings)
        execution_id = "01900000-0000-7000-8000-000000000001"
        per = args.rows // args.parts
        total_bytes = 0
        for i in range(args.parts):
            data = encode(part(i * per, per), args.format)
            total_bytes += len(data)
            await storage.put(f"{execution_id}/rows/part-{i:04d}.{args.format}", data)
        record = ExecutionRecord(
            id=execution_id,
            config_id="c",
            config_version=1,
            config_yaml=YAML,
            config_hash="0" * 64,
            pipeline="bench",
            namespace="default",
            layer="default",
            status="running",
            workflow_id="w",
            task_queue="q",
        )
        service = NodeDataService(session_factory(engine), storage)
        pool = pa.default_memory_pool()
        process = psutil.Process()

        rss0 = process.memory_info().rss
        t0 = time.perf_counter()
        keys = [k async for k in storage.list(f"{execution_id}/rows/")]
        tables = [decode(await storage.get(k), args.format) for k in keys]  # type: ignore[arg-type]
        baseline = pa.concat_tables(tables)
        plain_s = time.perf_counter() - t0
        assert baseline.num_rows == per * args.parts
        del tables, baseline

        rss1 = process.memory_info().rss
        t0 = time.perf_counter()
        profile = await service.profile(record, "write", with_drift=False)
        profile_s = time.perf_counter() - t0
        rss_peak = process.memory_info().rss
        assert profile.row_count == per * args.parts and profile.column_count == 5

        print(f"profile benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
        print(
            f"  {profile.row_count:,} rows in {args.parts} {args.format} objects ({total_bytes / 2**20:.1f} MiB stored)"
        )
        print(f"  read only (pyarrow, baseline)   {plain_s:6.2f} s")
        print(
            f"  profile (read + statistics)     {profile_s:6.2f} s   ({profile_s / plain_s:.2f}x the baseline)"
        )
        print(f"  Arrow peak allocation           {pool.max_memory() / 2**20:6.1f} MiB")
        print(
            f"  RSS before / after profiling    {rss0 / 2**20:6.1f} / {max(rss_peak, rss1) / 2**20:.1f} MiB"
        )
        for column in profile.columns:
            print(
                f"    {column['name']:<8} {column['type']:<18} nulls {column['null_pct']:5.1f}%  "
                f"unique {column['unique_count']:>9,}"
            )
        await storage.close()
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
