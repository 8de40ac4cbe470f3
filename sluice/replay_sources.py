"""Where a replay's objects come from: storage listing, lineage records, or named keys.

Shared by the API (which checks before starting that a replay would publish something: storage is
not a cache) and the publishing activity, so both resolve the same keys.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from sluice.db.models import ExecutionRecord, LineageRecord
from sluice.storage.base import LIST_PAGE, ObjectStorage
from sluice.storage.keys import is_sidecar, stage_prefix
from sluice.workflow_io import ReplaySpec

LINEAGE_PAGE = 1000


async def candidate_keys(
    spec: ReplaySpec, storage: ObjectStorage, sessions: async_sessionmaker[AsyncSession]
) -> AsyncIterator[list[str]]:
    async for page in candidate_pages(spec, storage, sessions):
        yield [key for key, _ in page]


async def candidate_pages(
    spec: ReplaySpec, storage: ObjectStorage, sessions: async_sessionmaker[AsyncSession]
) -> AsyncIterator[list[tuple[str, bool]]]:
    """The replay's keys, a page at a time, each with whether its listing proved it exists (named
    and lineage keys are proven by nobody: publishing checks them)."""
    if spec.replay_source == "manual":
        keys = spec.keys or []
        for start in range(0, len(keys), LIST_PAGE):
            yield [(key, False) for key in keys[start : start + LIST_PAGE]]
    elif spec.replay_source == "storage":
        async for page in storage.list_proven_pages(
            stage_prefix(spec.source_execution_id, spec.from_stage, spec.from_path)
        ):
            if objects := [item for item in page if not is_sidecar(item[0])]:
                yield objects
    else:
        async for keys in lineage_keys(spec, sessions):
            yield [(key, False) for key in keys]


async def has_candidates(
    spec: ReplaySpec, storage: ObjectStorage, sessions: async_sessionmaker[AsyncSession]
) -> bool:
    """Whether the replay would find an object: named keys must exist, a listing or lineage needs
    one key (found without listing the whole stage)."""
    if spec.replay_source == "manual":
        for key in spec.keys or []:
            if await storage.exists(key):
                return True
        return False
    if spec.replay_source == "storage":
        prefix = stage_prefix(spec.source_execution_id, spec.from_stage, spec.from_path)
        return await storage.any_key(prefix, lambda key: not is_sidecar(key))
    async with contextlib.aclosing(lineage_keys(spec, sessions)) as keys:
        async for _ in keys:
            return True
    return False


async def ancestry(sessions: async_sessionmaker[AsyncSession], execution_id: str) -> list[str]:
    """The execution, its parent, its parent's parent, ... (cycle-safe)."""
    chain: list[str] = []
    current: str | None = execution_id
    async with sessions() as session:
        while current and current not in chain:
            chain.append(current)
            record = await session.get(ExecutionRecord, current)
            current = record.parent_execution_id if record else None
    return chain


async def lineage_keys(
    spec: ReplaySpec, sessions: async_sessionmaker[AsyncSession]
) -> AsyncIterator[list[str]]:
    """Objects of `from_stage` recorded in lineage by the nearest execution of the ancestry that
    has any, a page at a time.

    A replay's own lineage records the objects it was fed, so replaying a replay resolves to the
    objects its ancestors wrote. Paged by key, so memory holds one page.
    """
    for execution_id in await ancestry(sessions, spec.source_execution_id):
        prefix = stage_prefix(execution_id, spec.from_stage, spec.from_path)
        found = False
        after = ""
        while True:
            async with sessions() as session:
                rows = await session.exec(
                    select(LineageRecord.object_key)
                    .where(
                        LineageRecord.execution_id == execution_id,
                        LineageRecord.stage == spec.from_stage,
                        col(LineageRecord.object_key) > after,
                    )
                    .distinct()
                    .order_by(LineageRecord.object_key)
                    .limit(LINEAGE_PAGE)
                )
                page = [k for k in rows.all() if k]
            if not page:
                break
            after = page[-1]
            if keys := [key for key in page if key.startswith(prefix)]:
                found = True
                yield keys
        if found:
            return
