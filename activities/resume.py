"""The resume activity: work out what an earlier execution left undone and hand it to a new one.

The source's lineage is the record of what happened: a message row with `processed_at` was
handled by its route (its outputs were committed in the same transaction), one without was not.
Everything the source's routes stored is carried into the new execution's prefix (server-side
copies, sidecars rewritten), so the new execution's stages hold what a clean run would; the
messages no route handled are sent again, spilled per route; a collect route that never ran owes
one run. A missing stored output fails the resume: it never re-runs or skips silently.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from pydantic_core import from_json
from sqlmodel import select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from sluice.activities.deps import ActivityDeps
from sluice.clock import utcnow
from sluice.db.events import RESUME_PREPARED, lifecycle_row
from sluice.db.models import ExecutionLogRecord, ExecutionRecord, LineageRecord, RouteRunRecord
from sluice.db.upsert import insert_ignore
from sluice.ids import derived_id, parse_uuid
from sluice.messages import Message, MessageMetadata
from sluice.replay_messages import ReplayMessages
from sluice.services.lineage import lineage_rows, replayed_row
from sluice.spill import read_pages, replay_keys_prefix, spill_prefix, write_spill
from sluice.storage.base import ObjectNotFoundError
from sluice.storage.keys import sidecar_key
from sluice.storage.stage import read_meta
from sluice.workflow_io import PREPARE_RESUME, ReplayKeys, ResumePlan, ResumeTask

COPY_CONCURRENCY = 16
INCOMPLETE = "ResumeSourceIncomplete"
MAX_MISSING_SHOWN = 5


def _committed(rows: list[LineageRecord], init_id: str | None) -> list[LineageRecord]:
    """The rows of batches that finished. A batch producing many messages stores their rows while
    it runs, before the transaction that marks its input processed: rows whose parent message is
    not marked belong to a batch that did not finish, which runs again (re-deriving them)."""
    unfinished = {r.correlation_id for r in rows if r.route != r.source_route and r.processed_at is None}
    if init_id is not None and init_id not in {r.correlation_id for r in rows}:
        unfinished.add(init_id)
    return [r for r in rows if r.parent_correlation_id is None or r.parent_correlation_id not in unfinished]


def _replay_rows(rows: list[LineageRecord], replay_batch_id: str) -> int:
    """Rows of a replay's own messages (publishing stored them all before messages were derived)."""
    return sum(1 for r in rows if r.replay_batch_id == replay_batch_id and r.source_route is None)


class ResumeActivities:
    def __init__(self, deps: ActivityDeps):
        self.deps = deps

    @activity.defn(name=PREPARE_RESUME)
    async def prepare_resume(self, task: ResumeTask) -> ResumePlan:
        """Idempotent: a retry copies to the same keys, writes the same pages and inserts the
        same lineage rows (ids derive from the new execution and the source's ids)."""
        source, new = task.spec.source_execution_id, task.execution_id
        async with self.deps.sessions() as session:
            record = await session.get(ExecutionRecord, source)
            rows = await lineage_rows(session, source)
            collect_done = set(
                (
                    await session.exec(
                        select(RouteRunRecord.route).where(
                            RouteRunRecord.execution_id == source, RouteRunRecord.status == "completed"
                        )
                    )
                ).all()
            )
        if record is None:
            raise ApplicationError(f"execution {source} not found", type=INCOMPLETE, non_retryable=True)
        rows = await self._unhandled_replay_rows(record, rows) + rows
        init_id = derived_id(source, "init")
        rows = _committed(rows, None if record.trigger == "resume" else init_id)
        carry = _Carrier(source, new)
        collect = set(task.collect_routes)
        routes = set(task.routes)

        objects = sorted({r.object_key for r in rows if r.source_route and carry.owns(r.object_key)})
        await self._copy(objects, carry)

        pending: dict[str, list[Message]] = defaultdict(list)
        plan = ResumePlan(objects_carried=len(objects))
        new_rows: list[dict[str, Any]] = []
        collected: dict[str, int] = defaultdict(int)
        handled = {r.correlation_id for r in rows}
        for row in rows:
            is_message = row.route != row.source_route
            if row.route in collect and is_message:
                collected[row.route] += 1
                continue
            waiting = is_message and row.processed_at is None
            if waiting:
                if row.payload is None:
                    raise ApplicationError(
                        f"execution {source} was recorded before Sluice kept message payloads; "
                        "it cannot be resumed (replay its stages instead)",
                        type=INCOMPLETE,
                        non_retryable=True,
                    )
                if row.route not in routes:
                    plan.dropped[row.route] = plan.dropped.get(row.route, 0) + 1
                    continue
            elif not carry.owns(row.object_key) or not row.source_route:
                continue  # handled, nothing stored: nothing to carry
            new_row = carry.row(row)
            new_rows.append(new_row)
            if waiting:
                pending[row.route].append(carry.message(row, new_row))

        if record.init_payload is not None and init_id not in handled and record.trigger != "resume":
            # The source's first message never reached a committed batch.
            if task.init_route is None or task.init_route not in routes:
                plan.dropped["init_message"] = 1
            else:
                message = Message(
                    payload=record.init_payload,
                    metadata=MessageMetadata(execution_id=new, correlation_id=derived_id(new, init_id)),
                )
                pending[task.init_route].insert(0, message)
                new_rows.append(carry.init_row(message, task.init_route))

        for name in sorted(collect):
            if name not in collect_done and collected.get(name):
                plan.collect[name] = collected[name]
        for name, messages in sorted(pending.items()):
            plan.queues[name] = await write_spill(
                self.deps.storage,
                spill_prefix(new, f"resume-{name}"),
                messages,
                task.page_sizes.get(name, task.spec.page_size),
            )
        plan.messages_pending = sum(len(m) for m in pending.values())
        async with self.deps.sessions() as session:
            await insert_ignore(session, LineageRecord, new_rows)
            await session.commit()
        await self._record(task, plan, {name: len(m) for name, m in pending.items()})
        return plan

    async def _unhandled_replay_rows(
        self, record: ExecutionRecord, rows: list[LineageRecord]
    ) -> list[LineageRecord]:
        """The rows a replay's publishing stored for messages its route never handled. A replay
        whose batches derive their messages stores none: they are rebuilt from its published keys."""
        replay = record.replay or {}
        if not replay.get("replay_batch_id") or "objects_published" not in replay:
            return []
        keys = ReplayKeys(
            replay_batch_id=replay["replay_batch_id"],
            stage=replay["from_stage"],
            metadata=replay.get("metadata"),
            clustered_ids=_clustered_ids(rows, replay["replay_batch_id"]),
        )
        derive = ReplayMessages(record.id, keys)
        handled = {r.correlation_id for r in rows}
        prefix = replay_keys_prefix(record.id, keys.replay_batch_id)
        unhandled: list[LineageRecord] = []
        pages = 0
        async for lines in read_pages(self.deps.storage, prefix):
            pages += 1
            for line in lines:
                key = from_json(line)
                message = derive.message(key)
                if message["metadata"]["correlation_id"] in handled:
                    continue
                unhandled.append(replayed_row(message, replay["to_route"], record.created_at, handled=False))
        if not pages and _replay_rows(rows, keys.replay_batch_id) < replay["objects_published"]:
            # Derived messages were never all handled, and the keys they derive from are gone.
            raise ApplicationError(
                f"the published keys of execution {record.id}'s replay are missing from storage "
                f"({prefix}); resuming would lose the messages its route never handled",
                type=INCOMPLETE,
                non_retryable=True,
            )
        return unhandled  # no pages and nothing unhandled: published before messages were derived

    async def _copy(self, keys: Sequence[str], carry: _Carrier) -> None:
        storage = self.deps.storage
        missing: list[str] = []
        done = 0
        gate = asyncio.Semaphore(COPY_CONCURRENCY)

        async def one(key: str) -> None:
            nonlocal done
            async with gate:
                target = carry.key(key)
                meta = await read_meta(storage, key)
                try:
                    await storage.copy(key, target, meta.content_type if meta else "application/octet-stream")
                except ObjectNotFoundError:
                    missing.append(key)
                    return
                if meta is not None:
                    moved = meta.model_copy(
                        update={"key": target, "execution_id": carry.new, "carried_from": key}
                    )
                    await storage.put(
                        sidecar_key(target), moved.model_dump_json(indent=2).encode(), "application/json"
                    )
                done += 1
                if done % 100 == 0:
                    activity.heartbeat({"objects_carried": done, "objects": len(keys)})

        await asyncio.gather(*(one(k) for k in keys))
        if missing:
            shown = ", ".join(sorted(missing)[:MAX_MISSING_SHOWN])
            raise ApplicationError(
                f"{len(missing)} stored output(s) of execution {carry.source} are missing ({shown}"
                f"{', ...' if len(missing) > MAX_MISSING_SHOWN else ''}); resuming would lose or redo "
                "work, so it stops here",
                type=INCOMPLETE,
                non_retryable=True,
            )

    async def _record(self, task: ResumeTask, plan: ResumePlan, pending: dict[str, int]) -> None:
        summary = {
            "from_execution_id": task.spec.source_execution_id,
            "objects_carried": plan.objects_carried,
            "messages_pending": pending,
            "collect_pending": plan.collect,
            "dropped": plan.dropped,
        }
        async with self.deps.sessions() as session:
            record = await session.get(ExecutionRecord, task.execution_id)
            if record is not None:
                record.resume = {**(record.resume or {}), **summary}
                session.add(record)
            session.add(
                ExecutionLogRecord(
                    **lifecycle_row(
                        task.execution_id,
                        RESUME_PREPARED,
                        f"resuming {task.spec.source_execution_id}: {plan.objects_carried} stored object(s) "
                        f"carried over, {plan.messages_pending} message(s) to handle again"
                        + (f", collect route(s) {', '.join(plan.collect)} to run" if plan.collect else "")
                        + (
                            f"; dropped for routes no longer in the config: {plan.dropped}"
                            if plan.dropped
                            else ""
                        ),
                        level="warn" if plan.dropped else "info",
                        data=summary,
                    )
                )
            )
            await session.commit()


def _clustered_ids(rows: list[LineageRecord], replay_batch_id: str) -> bool:
    """Which ids the replay's handled messages got: UUIDv7 (`ClusteredIds`, replays of now) or
    uuid5 (replays started before). Only matched against those rows, so with none either does."""
    for row in rows:
        if row.replay_batch_id == replay_batch_id and row.source_route is None:
            parsed = parse_uuid(row.correlation_id)
            return parsed is not None and parsed.version == 7
    return True


class _Carrier:
    """Maps the source execution's keys, ids and rows onto the new execution."""

    def __init__(self, source: str, new: str):
        self.source, self.new = source, new
        self.prefix = f"{source}/"

    def owns(self, key: str | None) -> bool:
        return bool(key) and key.startswith(self.prefix)  # type: ignore[union-attr]

    def key(self, key: str) -> str:
        return f"{self.new}/{key[len(self.prefix) :]}"

    def payload(self, payload: dict[str, Any] | None) -> dict[str, Any] | None:
        if payload is None:
            return None
        key = payload.get("object_key")
        if isinstance(key, str) and self.owns(key):
            return {**payload, "object_key": self.key(key)}
        return payload

    def row(self, row: LineageRecord) -> dict[str, Any]:
        return {
            "correlation_id": derived_id(self.new, row.correlation_id),
            "execution_id": self.new,
            "parent_correlation_id": row.parent_correlation_id,
            "route": row.route,
            "source_route": row.source_route,
            "stage": row.stage,
            "object_key": self.key(row.object_key)
            if row.object_key and self.owns(row.object_key)
            else row.object_key,
            "replay_batch_id": row.replay_batch_id,
            "payload": self.payload(row.payload),
            "created_at": utcnow(),
            "processed_at": row.processed_at,
        }

    def message(self, row: LineageRecord, new_row: dict[str, Any]) -> Message:
        return Message(
            payload=new_row["payload"] or {},
            metadata=MessageMetadata(
                execution_id=self.new,
                correlation_id=new_row["correlation_id"],
                parent_correlation_id=row.parent_correlation_id,
                replay_batch_id=row.replay_batch_id,
                source_route=row.source_route,
            ),
        )

    def init_row(self, message: Message, route: str) -> dict[str, Any]:
        return {
            "correlation_id": message.metadata.correlation_id,
            "execution_id": self.new,
            "parent_correlation_id": None,
            "route": route,
            "source_route": None,
            "stage": None,
            "object_key": None,
            "replay_batch_id": None,
            "payload": message.payload,
            "created_at": utcnow(),
            "processed_at": None,
        }
