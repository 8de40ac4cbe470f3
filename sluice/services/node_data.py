"""What a route wrote, as data: previews (first rows) and profiles (per-column statistics, with
drift against the pipeline's previous successful run), decoded by `sluice.tabular`."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from sluice.db.models import ExecutionRecord, NodeProfileRecord
from sluice.db.upsert import insert_ignore
from sluice.errors import NotFoundError
from sluice.pipeline_config import PipelineConfig
from sluice.storage.base import ObjectNotFoundError, ObjectStorage
from sluice.storage.keys import is_sidecar, stage_prefix
from sluice.storage.stage import read_meta
from sluice.tabular import Format, NotTabular, concat, decode, format_of, read_head, to_rows

MAX_PREVIEW = 500
SAMPLE_VALUES = 5
NULL_SPIKE_POINTS = 10.0  # a column's null share rising by this many points is drift
TERMINAL = ("completed", "failed", "cancelled", "interrupted")


@dataclass
class Preview:
    columns: list[str]
    rows: list[dict[str, Any]]
    objects: int = 0


@dataclass
class StoredObject:
    key: str
    fmt: Format | None
    content_type: str | None = None
    size: int | None = None


@dataclass
class Profile:
    row_count: int
    column_count: int
    columns: list[dict[str, Any]]
    profiling_ms: int
    drift: list[dict[str, Any]] = field(default_factory=list)
    compared_with: str | None = None


class NodeDataService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], storage: ObjectStorage):
        self.sessions = sessions
        self.storage = storage

    async def objects(
        self, record: ExecutionRecord, route: str, *, limit: int | None = None
    ) -> list[StoredObject]:
        """The objects `route` stored in this execution, in key order (sidecars consulted only when
        the stage is shared with another route or an extension says nothing)."""
        pipeline = PipelineConfig.from_snapshot(record.config_yaml)
        found = pipeline.route(route)
        if found is None:
            raise NotFoundError(
                f"run {record.id} has no node {route!r} (nodes: {', '.join(r.name for r in pipeline.routes)})",
                error_code="NODE_NOT_FOUND",
            )
        if not found.stage:
            raise NotFoundError(
                f"node {route!r} stores nothing (it has no `stage:`)", error_code="NODE_OUTPUT_EMPTY"
            )
        shared = sum(1 for r in pipeline.routes if r.stage == found.stage) > 1
        out: list[StoredObject] = []
        async for key in self.storage.list(stage_prefix(record.id, found.stage)):
            if is_sidecar(key):
                continue
            fmt = format_of(key)
            content_type = None
            if shared or fmt is None:
                meta = await read_meta(self.storage, key)
                if meta is not None:
                    if shared and meta.route != route:
                        continue
                    content_type = meta.content_type
                    fmt = fmt or format_of(key, meta.content_type)
            out.append(StoredObject(key, fmt, content_type))
            if limit is not None and len(out) >= limit:
                break
        return out

    async def preview(self, record: ExecutionRecord, route: str, limit: int = 50) -> Preview:
        """The first `limit` rows of what the route wrote, reading objects (and of big ones, only
        their heads) until there are enough."""
        objects = await self.objects(record, route)
        if not objects:
            raise NotFoundError(
                f"node {route!r} of run {record.id} wrote nothing", error_code="NODE_OUTPUT_EMPTY"
            )
        tabular = [o for o in objects if o.fmt is not None]
        if not tabular:
            raise NotFoundError(
                f"node {route!r} wrote {len(objects)} object(s), none tabular (JSON, JSON Lines, CSV, "
                f"Parquet or text), e.g. {objects[0].key}",
                error_code="NODE_OUTPUT_NOT_TABULAR",
            )
        tables: list[pa.Table] = []
        rows = 0
        problem: str | None = None
        for obj in tabular:
            try:
                size = await self.storage.size(obj.key)
                table = await read_head(
                    lambda start, n, key=obj.key: self.storage.get_range(key, start, n),
                    size,
                    obj.fmt,  # type: ignore[arg-type]
                    limit - rows,
                )
            except (NotTabular, ObjectNotFoundError) as exc:
                problem = problem or f"{obj.key}: {exc}"
                continue
            tables.append(table)
            rows += table.num_rows
            if rows >= limit:
                break
        if not tables:
            raise NotFoundError(
                f"node {route!r} of run {record.id}: no object could be read as rows ({problem})",
                error_code="NODE_OUTPUT_NOT_TABULAR",
            )
        columns, out = to_rows(concat(tables).slice(0, limit))
        return Preview(columns, out, len(tables))

    async def table(self, record: ExecutionRecord, route: str) -> pa.Table:
        """Every row the route wrote (what a profile needs)."""
        tables = []
        for obj in await self.objects(record, route):
            if obj.fmt is None:
                continue
            try:
                data = await self.storage.get(obj.key)
                tables.append(await asyncio.to_thread(decode, data, obj.fmt))
            except (NotTabular, ObjectNotFoundError):
                continue
        return concat(tables)

    async def profile(self, record: ExecutionRecord, route: str, *, with_drift: bool = True) -> Profile:
        """Per-column statistics, cached per run and node once the run has ended; `drift` against
        the same node in the pipeline's previous successful run."""
        cached = await self._cached(record.id, route)
        if cached is None:
            started = time.perf_counter()
            table = await self.table(record, route)
            if table.num_columns == 0:
                raise NotFoundError(
                    f"node {route!r} of run {record.id} wrote nothing tabular",
                    error_code="NODE_OUTPUT_NOT_TABULAR",
                )
            columns = await asyncio.to_thread(profile_columns, table)
            cached = Profile(
                row_count=table.num_rows,
                column_count=table.num_columns,
                columns=columns,
                profiling_ms=int((time.perf_counter() - started) * 1000),
            )
            if record.status in TERMINAL:
                await self._store(record.id, route, cached)
        previous = await self._previous_success(record) if with_drift else None
        if previous is not None:
            try:
                before = await self.profile(previous, route, with_drift=False)
            except NotFoundError:
                before = None
            if before is not None:
                cached.drift = drift(before.columns, cached.columns)
                cached.compared_with = previous.id
        return cached

    async def _previous_success(self, record: ExecutionRecord) -> ExecutionRecord | None:
        async with self.sessions() as session:
            return (
                await session.exec(
                    select(ExecutionRecord)
                    .where(
                        ExecutionRecord.config_id == record.config_id,
                        ExecutionRecord.status == "completed",
                        col(ExecutionRecord.created_at) < record.created_at,
                    )
                    .order_by(col(ExecutionRecord.created_at).desc())
                    .limit(1)
                )
            ).first()

    async def _cached(self, execution_id: str, route: str) -> Profile | None:
        async with self.sessions() as session:
            row = await session.get(NodeProfileRecord, (execution_id, route))
        if row is None:
            return None
        return Profile(**row.profile)

    async def _store(self, execution_id: str, route: str, profile: Profile) -> None:
        data = {k: v for k, v in profile.__dict__.items() if k not in ("drift", "compared_with")}
        async with self.sessions() as session:
            await insert_ignore(
                session, NodeProfileRecord, [{"execution_id": execution_id, "route": route, "profile": data}]
            )
            await session.commit()


def profile_columns(table: pa.Table) -> list[dict[str, Any]]:
    rows = table.num_rows
    out = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        nulls = column.null_count
        unique = pc.count_distinct(column, mode="only_valid").as_py() if rows else 0
        entry: dict[str, Any] = {
            "name": name,
            "type": str(column.type),
            "null_count": nulls,
            "null_pct": round(100.0 * nulls / rows, 2) if rows else 0.0,
            "unique_count": unique,
            "unique_pct": round(100.0 * unique / rows, 2) if rows else 0.0,
            "min": None,
            "max": None,
            "mean": None,
            "sample_values": [],
        }
        kind = column.type
        if rows - nulls and (
            pa.types.is_integer(kind)
            or pa.types.is_floating(kind)
            or pa.types.is_temporal(kind)
            or pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
            or pa.types.is_boolean(kind)
            or pa.types.is_decimal(kind)
        ):
            bounds = pc.min_max(column)
            entry["min"] = _plain(bounds["min"].as_py())
            entry["max"] = _plain(bounds["max"].as_py())
        if rows - nulls and (
            pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
        ):
            mean = pc.mean(column).as_py()
            entry["mean"] = None if mean is None else round(float(mean), 6)
        if rows - nulls:
            head = column.slice(0, 10_000).drop_null()
            entry["sample_values"] = [_plain(v) for v in pc.unique(head).slice(0, SAMPLE_VALUES).to_pylist()]
        out.append(entry)
    return out


def drift(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What changed in a node's columns since the previous successful run."""
    old = {c["name"]: c for c in before}
    new = {c["name"]: c for c in after}
    changes: list[dict[str, Any]] = []
    for name, column in new.items():
        if name not in old:
            changes.append(
                {"column": name, "change": "column_added", "previous": None, "current": column["type"]}
            )
            continue
        prev = old[name]
        if prev["type"] != column["type"]:
            changes.append(
                {
                    "column": name,
                    "change": "type_changed",
                    "previous": prev["type"],
                    "current": column["type"],
                }
            )
        if column["null_pct"] - prev["null_pct"] >= NULL_SPIKE_POINTS:
            changes.append(
                {
                    "column": name,
                    "change": "null_spike",
                    "previous": prev["null_pct"],
                    "current": column["null_pct"],
                }
            )
    for name, prev in old.items():
        if name not in new:
            changes.append(
                {"column": name, "change": "column_removed", "previous": prev["type"], "current": None}
            )
    return changes


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
