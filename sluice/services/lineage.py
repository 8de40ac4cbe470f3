"""Lineage: every message and stored object with the message it came from.

Written by route batches and replay publishing (`LineageWriter`), read as an execution's message
graph or one object's ancestry across replays (`LineageService`). A replay's handled messages are
stored one row per batch (`ReplayLineageRecord`): readers see them through `lineage_rows` (or
`find_replayed`), as the message rows they stand for.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic_core import to_json, to_jsonable_python
from sqlalchemy import Connection, bindparam, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import Session, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from sluice.clock import utcnow
from sluice.db.engine import SyncTransactions
from sluice.db.models import ExecutionRecord, LineageRecord, PipelineConfigRecord, ReplayLineageRecord
from sluice.db.upsert import execute_many, upsert_statement
from sluice.messages import Message
from sluice.pipeline_config import PipelineConfig
from sluice.replay_messages import ReplayMessages
from sluice.workflow_io import ReplayKeys

MAX_ANCESTRY = 1000
WRITE_CHUNK = 500
# Built once: a statement built per call spends more on its cache key than on the update.
MARK_PROCESSED = (
    update(LineageRecord.__table__)  # type: ignore[arg-type]
    .where(LineageRecord.__table__.c.correlation_id.in_(bindparam("ids", expanding=True)))  # type: ignore[attr-defined]
    .values(processed_at=bindparam("now"))
)


@dataclass
class Emission:
    """One lineage row: a message (or a terminal object) produced while handling `parent`."""

    correlation_id: str
    parent_correlation_id: str | None
    route: str
    source_route: str | None
    stage: str | None
    object_key: str | None
    replay_batch_id: str | None
    payload: dict[str, Any] | None = None


@dataclass
class LineageBatch:
    """What one batch (or a chunk of a fan-out or a replay's publishing) records: the messages and
    objects it produced, and the messages `route` handled."""

    execution_id: str
    emissions: Sequence[Emission]
    route: str | None = None
    processed: Sequence[Message] = ()
    replay: ReplayKeys | None = None  # `processed` are this replay's derived messages


class LineageWriter:
    """Group commit: batches finishing at the same time on one worker share one transaction.

    Each caller waits for the commit that holds its rows, so a batch still counts as recorded
    only once its rows are durable; while one transaction is written, the next callers queue up
    and go together in the following one (with many small batches, per-transaction overhead is
    what costs). Transactions go through `SyncTransactions` (on SQLite, one hand-off each).
    """

    def __init__(self, transactions: SyncTransactions):
        self.transactions = transactions
        self._queue: list[tuple[LineageBatch, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def record(
        self,
        execution_id: str,
        emissions: Sequence[Emission],
        *,
        route: str | None = None,
        processed: Sequence[Message] = (),
        replay: ReplayKeys | None = None,
    ) -> None:
        """`replay`: the handled messages derive from this replay's keys; they were never stored,
        and one row records them all."""
        if not emissions and not processed:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((LineageBatch(execution_id, emissions, route, processed, replay), done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name="sluice-lineage-writer")
        await asyncio.shield(done)  # a cancelled caller's rows are still written (or not) whole

    async def _drain(self) -> None:
        while self._queue:
            group, self._queue = self._queue, []
            batches = [batch for batch, _ in group]
            try:
                await self.transactions.run(functools.partial(write_lineage, batches=batches))
            except Exception as exc:
                for _, done in group:
                    if not done.done():
                        done.set_exception(exc)
                        done.exception()  # retrieved: a caller cancelled meanwhile logs nothing
            else:
                for _, done in group:
                    if not done.done():
                        done.set_result(None)


def write_lineage(session: Session, batches: Sequence[LineageBatch]) -> None:
    """Insert-or-ignore by correlation id: a retried batch re-derives the same ids, so no duplicates.

    The messages a batch handled are marked in the same transaction as what they produced, so a
    message is either handled with all its outputs recorded or not at all (what a resume relies
    on). Runs inside the caller's transaction."""
    conn = session.connection()
    now = utcnow()
    emissions = {e.correlation_id: (batch.execution_id, e) for batch in batches for e in batch.emissions}
    if emissions:
        # An emission already stored (a retried batch) is left as it is.
        _insert_rows(conn, [_emission_row(execution_id, e) for execution_id, e in emissions.values()], now)
    replayed = [_replay_row(batch, now) for batch in batches if batch.replay is not None and batch.processed]
    if replayed:
        # A retried batch handles the same keys and finds its row: the first message's id.
        execute_many(conn, upsert_statement(conn.dialect.name, ReplayLineageRecord.__table__), replayed)  # type: ignore[arg-type]
    stored = [(batch, m) for batch in batches if batch.replay is None for m in batch.processed]
    if stored and _mark(conn, [m for _, m in stored], now) < len(stored):
        # Some handled message had no row yet (an execution's first message): insert them marked;
        # on a known id only processed_at changes.
        handled = {m.metadata.correlation_id: (batch, m) for batch, m in stored}
        _insert_rows(conn, [_handled_row(batch, m) for batch, m in handled.values()], now, handled=True)


def _replay_row(batch: LineageBatch, now: datetime) -> dict[str, Any]:
    replay = batch.replay
    assert replay is not None and batch.route is not None
    return {
        "id": batch.processed[0].metadata.correlation_id,
        "execution_id": batch.execution_id,
        "replay_batch_id": replay.replay_batch_id,
        "route": batch.route,
        "stage": replay.stage,
        "clustered_ids": replay.clustered_ids,
        "object_keys": [m.object_key for m in batch.processed],
        "handled_at": now,
    }


def _order(row: LineageRecord) -> tuple[datetime, str]:
    return row.created_at, row.correlation_id


def expand_replayed(record: ReplayLineageRecord) -> list[LineageRecord]:
    """The message rows one replay batch's row stands for, as they were stored one per object
    before: ids and payloads derive exactly as the batch derived its messages."""
    return [
        replayed_row(message, record.route, record.handled_at, handled=True)
        for message in _derivation(record).messages(record.object_keys)
    ]


def _derivation(record: ReplayLineageRecord) -> ReplayMessages:
    return ReplayMessages(
        record.execution_id,
        ReplayKeys(
            replay_batch_id=record.replay_batch_id, stage=record.stage, clustered_ids=record.clustered_ids
        ),
    )


def replayed_row(
    message: dict[str, Any], route: str, created_at: datetime, *, handled: bool
) -> LineageRecord:
    """The lineage row of a replay's derived message (`ReplayMessages.message`) sent to `route`."""
    metadata, payload = message["metadata"], message["payload"]
    return LineageRecord(
        correlation_id=metadata["correlation_id"],
        execution_id=metadata["execution_id"],
        route=route,
        stage=payload["stage"][:255],
        object_key=payload["object_key"],
        replay_batch_id=metadata["replay_batch_id"],
        payload=payload,
        created_at=created_at,
        processed_at=created_at if handled else None,
    )


async def replayed_rows(session: AsyncSession, execution_id: str) -> list[LineageRecord]:
    """The rows of the replayed messages an execution's batches handled, in lineage order
    (created_at, correlation_id)."""
    records = await _replay_batches(session, execution_id)
    return sorted((row for record in records for row in expand_replayed(record)), key=_order)


async def _replay_batches(session: AsyncSession, execution_id: str) -> Sequence[ReplayLineageRecord]:
    query = (
        select(ReplayLineageRecord)
        .where(ReplayLineageRecord.execution_id == execution_id)
        .order_by(col(ReplayLineageRecord.handled_at), col(ReplayLineageRecord.id))
    )
    return (await session.exec(query)).all()


async def find_replayed(
    session: AsyncSession,
    execution_id: str,
    *,
    object_key: str | None = None,
    correlation_id: str | None = None,
) -> LineageRecord | None:
    """The row of one replayed message an execution handled, by its key or its id; only that
    row is built (a replay of 100,000 objects is not expanded to find one)."""
    for record in await _replay_batches(session, execution_id):
        derive = _derivation(record)
        for key in record.object_keys:
            if object_key is not None and key != object_key:
                continue
            if correlation_id is not None and derive.correlation_id(key) != correlation_id:
                continue
            return replayed_row(derive.message(key), record.route, record.handled_at, handled=True)
    return None


async def lineage_rows(
    session: AsyncSession, execution_id: str, *, limit: int | None = None
) -> list[LineageRecord]:
    """Every lineage row of an execution (the replayed messages' included), in lineage order."""
    query = (
        select(LineageRecord)
        .where(LineageRecord.execution_id == execution_id)
        .order_by(col(LineageRecord.created_at), col(LineageRecord.correlation_id))
    )
    stored = list((await session.exec(query if limit is None else query.limit(limit))).all())
    merged = heapq.merge(stored, await replayed_rows(session, execution_id), key=_order)
    return list(merged if limit is None else itertools.islice(merged, limit))


def _emission_row(execution_id: str, e: Emission) -> tuple[Any, ...]:
    return (
        e.correlation_id,
        e.parent_correlation_id,
        e.route,
        e.source_route,
        e.stage,
        e.object_key,
        e.replay_batch_id,
        execution_id,
        e.payload,
    )


def _handled_row(batch: LineageBatch, m: Message) -> tuple[Any, ...]:
    metadata = m.metadata
    return (
        metadata.correlation_id,
        metadata.parent_correlation_id,
        batch.route,
        metadata.source_route,
        _stage_of(m),
        m.object_key,
        metadata.replay_batch_id,
        batch.execution_id,
        m.payload,
    )


_COLUMNS = (
    "correlation_id",
    "parent_correlation_id",
    "route",
    "source_route",
    "stage",
    "object_key",
    "replay_batch_id",
    "execution_id",
    "payload",
    "created_at",
    "processed_at",
)
# SQLite gets the rows as plain tuples through the driver's executemany: SQLAlchemy's per-row
# parameter processing cost more than the inserts (a fan-out or a replay writes one row per object).
_SQLITE_INSERT = (
    f"INSERT INTO {LineageRecord.__tablename__} ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_COLUMNS))}) ON CONFLICT "
)
_SQLITE_INSERT_NEW = _SQLITE_INSERT + "DO NOTHING"
_SQLITE_INSERT_HANDLED = (
    _SQLITE_INSERT + "(correlation_id) DO UPDATE SET processed_at = excluded.processed_at"
)


def _insert_rows(conn: Connection, rows: list[tuple[Any, ...]], now: datetime, handled: bool = False) -> None:
    """Insert rows of (`_COLUMNS` but the timestamps): new emissions are left alone when they
    exist already (a retried batch), handled messages get their processed_at either way."""
    table = LineageRecord.__table__  # type: ignore[attr-defined]
    dialect = conn.dialect
    if dialect.name == "sqlite":
        # Stored as SQLAlchemy stores them (its datetime text; None as JSON null, as sa.JSON
        # does), so the ORM reads these rows like any other.
        created = table.c.created_at.type.dialect_impl(dialect).bind_processor(dialect)(now)
        stamps = (created, created if handled else None)
        conn.exec_driver_sql(
            _SQLITE_INSERT_HANDLED if handled else _SQLITE_INSERT_NEW,
            [(*r[:-1], to_json(r[-1]).decode(), *stamps) for r in rows],
        )
        return
    stamps = (now, now if handled else None)
    execute_many(
        conn,
        upsert_statement(dialect.name, table, ("processed_at",) if handled else ()),
        [dict(zip(_COLUMNS, (*r[:-1], to_jsonable_python(r[-1]), *stamps), strict=True)) for r in rows],
    )


def _mark(conn: Connection, processed: Sequence[Message], now: datetime) -> int:
    """Set processed_at on the rows of handled messages (each was stored when it was sent);
    returns how many rows it found. Cheaper than upserting whole rows again."""
    ids = list(dict.fromkeys(m.metadata.correlation_id for m in processed))
    found = 0
    for i in range(0, len(ids), WRITE_CHUNK):
        result = conn.execute(MARK_PROCESSED, {"ids": ids[i : i + WRITE_CHUNK], "now": now})
        found += result.rowcount
    return found + (len(processed) - len(ids))  # duplicates in a batch count as found


def _stage_of(message: Message) -> str | None:
    stage = message.payload.get("stage")
    return stage[:255] if message.object_key and isinstance(stage, str) else None


@dataclass
class PlatformGraph:
    """Routes, the stages they write and read, the external sources built-ins read, and the
    cross-pipeline edges replays created."""

    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    edges: dict[tuple[str, str, str], None] = field(default_factory=dict)  # ordered set

    def node(self, node_id: str, kind: str, name: str, pipeline_id: str | None) -> str:
        self.nodes.setdefault(
            node_id, {"id": node_id, "type": kind, "name": name, "pipeline_id": pipeline_id}
        )
        return node_id

    def edge(self, source: str, target: str, pipeline_id: str) -> None:
        self.edges[(source, target, pipeline_id)] = None


def route_node(config_id: str, route: str) -> str:
    return f"route:{config_id}:{route}"


def stage_node(config_id: str, stage: str) -> str:
    return f"stage:{config_id}:{stage}"


def pipeline_graph(graph: PlatformGraph, config_id: str, pipeline: PipelineConfig) -> None:
    """One pipeline's part of the platform graph, from its config."""
    init = pipeline.init_message
    for route in pipeline.routes:
        here = graph.node(route_node(config_id, route.name), "route", route.name, config_id)
        out = here
        if route.stage:
            out = graph.node(stage_node(config_id, route.stage), "stage", route.stage, config_id)
            graph.edge(here, out, config_id)
        for target in route.next:
            if pipeline.route(target) is not None:
                graph.edge(out, route_node(config_id, target), config_id)
        if route.handler == "read_files":
            options = {**route.params, **(init.payload if init and init.route == route.name else {})}
            source = options.get("source")
            if isinstance(source, str) and source:
                location = source
                base = options.get("base_dir")
                if not source.startswith("s3://") and isinstance(base, str) and not source.startswith("/"):
                    location = f"{base.rstrip('/')}/{source}"
                kind = "bucket" if source.startswith("s3://") else "folder"
                graph.edge(graph.node(f"source:{location}", kind, location, None), here, config_id)


@dataclass
class LineageGraph:
    nodes: list[LineageRecord] = field(default_factory=list)
    edges: list[tuple[str, str]] = field(default_factory=list)
    truncated: bool = False


class LineageService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]):
        self.sessions = sessions

    async def platform(self) -> PlatformGraph:
        """Across all pipelines: each config's routes and stages, and every stage of one pipeline
        that a replay published into another pipeline's route."""
        graph = PlatformGraph()
        async with self.sessions() as session:
            configs = (
                await session.exec(select(PipelineConfigRecord).order_by(col(PipelineConfigRecord.name)))
            ).all()
            replays = (
                await session.exec(
                    select(
                        ExecutionRecord.config_id, ExecutionRecord.replay, ExecutionRecord.parent_execution_id
                    ).where(
                        col(ExecutionRecord.replay).is_not(None),
                        col(ExecutionRecord.parent_execution_id).is_not(None),
                    )
                )
            ).all()
            parents = {
                p: c
                for p, c in (
                    await session.exec(
                        select(ExecutionRecord.id, ExecutionRecord.config_id).where(
                            col(ExecutionRecord.id).in_({r[2] for r in replays})
                        )
                    )
                ).all()
            }
        for config in configs:
            try:
                pipeline_graph(graph, config.id, PipelineConfig.from_snapshot(config.yaml))
            except Exception:
                continue  # a stored config always parsed once; never let one break the graph
        for child_config, replay, parent_id in replays:
            parent_config = parents.get(parent_id)
            if not parent_config or parent_config == child_config or not isinstance(replay, dict):
                continue
            stage, route = replay.get("from_stage"), replay.get("to_route")
            if not stage or not route:
                continue
            source = graph.node(stage_node(parent_config, stage), "stage", stage, parent_config)
            target = graph.node(route_node(child_config, route), "route", route, child_config)
            graph.edge(source, target, child_config)
        return graph

    async def execution_graph(self, execution_id: str, *, limit: int) -> LineageGraph:
        async with self.sessions() as session:
            rows = await lineage_rows(session, execution_id, limit=limit + 1)
        graph = LineageGraph(nodes=rows[:limit], truncated=len(rows) > limit)
        ids = {r.correlation_id for r in graph.nodes}
        graph.edges = [
            (r.parent_correlation_id, r.correlation_id) for r in graph.nodes if r.parent_correlation_id in ids
        ]
        return graph

    async def ancestry(self, execution_id: str, object_key: str) -> LineageGraph:
        """Walk from the message that carried (or the record that wrote) `object_key` back to the
        execution's first input; across a replay, continue in the execution that wrote the object."""
        graph = LineageGraph()
        seen: set[str] = set()
        async with self.sessions() as session:
            current = (
                await session.exec(
                    select(LineageRecord)
                    .where(LineageRecord.execution_id == execution_id, LineageRecord.object_key == object_key)
                    .limit(1)
                )
            ).first()
            if current is None:  # a replayed object: the message that carried it into this execution
                current = await find_replayed(session, execution_id, object_key=object_key)
            while current is not None and current.correlation_id not in seen and len(seen) < MAX_ANCESTRY:
                seen.add(current.correlation_id)
                graph.nodes.append(current)
                parent: LineageRecord | None = None
                if current.parent_correlation_id:
                    parent_id = current.parent_correlation_id
                    parent = await session.get(LineageRecord, parent_id)
                    if parent is None:  # an output of a replayed message
                        parent = await find_replayed(session, current.execution_id, correlation_id=parent_id)
                elif current.replay_batch_id and current.object_key:
                    # A replayed message: the object was written in another execution.
                    owner = current.object_key.split("/", 1)[0]
                    parent = (
                        await session.exec(
                            select(LineageRecord)
                            .where(
                                LineageRecord.execution_id == owner,
                                LineageRecord.object_key == current.object_key,
                            )
                            .limit(1)
                        )
                    ).first()
                if parent is not None:
                    graph.edges.append((parent.correlation_id, current.correlation_id))
                current = parent
        graph.truncated = len(seen) >= MAX_ANCESTRY
        return graph
