"""The publishing phase of a replay: turn stored objects into messages for the target route.

The messages are written as spill pages (never returned through history), so a replay of any
size costs the workflow one small result.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from sqlmodel import select
from temporalio import activity

from activities.deps import ActivityDeps
from sluice.db.models import ExecutionRecord, LineageRecord
from sluice.ids import derived_id
from sluice.messages import Message, MessageMetadata
from sluice.spill import spill_prefix, write_spill
from sluice.storage.keys import is_sidecar, stage_prefix, validate_key
from sluice.workflow_io import LIST_REPLAY_OBJECTS, ReplayListing, ReplaySpec

PAGE_SIZE = 100
CHECK_CONCURRENCY = 16
MAX_ERRORS_REPORTED = 50


class ReplayActivities:
    def __init__(self, deps: ActivityDeps):
        self.deps = deps

    @activity.defn(name=LIST_REPLAY_OBJECTS)
    async def list_replay_objects(self, spec: ReplaySpec) -> ReplayListing:
        info = activity.info()
        execution_id = info.workflow_id.removeprefix("sluice-exec-")
        counts = {"found": 0, "published": 0, "failed": 0}
        errors: list[str] = []

        async def messages() -> AsyncIterator[Message]:
            async for chunk in _chunks(self._candidate_keys(spec), CHECK_CONCURRENCY):
                readable = await asyncio.gather(*(self._readable(k) for k in chunk))
                for key, problem in zip(chunk, readable, strict=True):
                    counts["found"] += 1
                    if counts["found"] % 500 == 0:
                        activity.heartbeat(counts)
                    if problem:
                        counts["failed"] += 1
                        if len(errors) < MAX_ERRORS_REPORTED:
                            errors.append(f"{key}: {problem}")
                        continue
                    counts["published"] += 1
                    yield Message(
                        payload={
                            "object_key": key,
                            "stage": spec.from_stage,
                            "path": key.removeprefix(stage_prefix(_owner(key), spec.from_stage)),
                        },
                        metadata=MessageMetadata(
                            execution_id=execution_id,
                            correlation_id=derived_id(spec.replay_batch_id, key),
                            replay_batch_id=spec.replay_batch_id,
                            source_route=None,
                        ),
                    )

        ref = await write_spill(
            self.deps.storage,
            spill_prefix(execution_id, f"replay-{spec.replay_batch_id}"),
            messages(),
            PAGE_SIZE,
        )
        return ReplayListing(
            objects_found=counts["found"],
            objects_published=counts["published"],
            objects_failed=counts["failed"],
            errors=errors,
            spill=ref,
        )

    async def _readable(self, key: str) -> str | None:
        try:
            validate_key(key)
            if not await self.deps.storage.exists(key):
                return "object does not exist or cannot be read"
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    async def _candidate_keys(self, spec: ReplaySpec) -> AsyncIterator[str]:
        if spec.replay_source == "manual":
            for key in spec.keys or []:
                yield key
            return
        if spec.replay_source == "storage":
            prefix = stage_prefix(spec.source_execution_id, spec.from_stage, spec.from_path)
            async for key in self.deps.storage.list(prefix):
                if not is_sidecar(key):
                    yield key
            return
        async for key in self._lineage_keys(spec):
            yield key

    async def _lineage_keys(self, spec: ReplaySpec) -> AsyncIterator[str]:
        """Objects of `from_stage` recorded in lineage, from the nearest ancestor that wrote any."""
        async with self.deps.sessions() as session:
            execution_id: str | None = spec.source_execution_id
            seen: set[str] = set()
            while execution_id and execution_id not in seen:
                seen.add(execution_id)
                prefix = stage_prefix(execution_id, spec.from_stage, spec.from_path)
                rows = await session.exec(
                    select(LineageRecord.object_key)
                    .where(LineageRecord.execution_id == execution_id, LineageRecord.stage == spec.from_stage)
                    .distinct()
                    .order_by(LineageRecord.object_key)
                )
                keys = [k for k in rows.all() if k and k.startswith(prefix)]
                if keys:
                    for key in keys:
                        yield key
                    return
                parent = await session.get(ExecutionRecord, execution_id)
                execution_id = parent.parent_execution_id if parent else None


def _owner(key: str) -> str:
    return key.split("/", 1)[0]


async def _chunks(source: AsyncIterator[str], size: int) -> AsyncIterator[list[str]]:
    chunk: list[str] = []
    async for item in source:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
