"""The publishing phase of a replay: the stored objects a replay feeds into its target route.

A replay publishes its readable keys as spill pages and its route's batches derive each message
from its key (`sluice.replay_messages`), so publishing stores nothing per object and the workflow
carries one small result whatever the size. Replays started before that (chunked, or one shot)
publish whole messages and their lineage rows here.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from pydantic_core import from_json
from temporalio import activity

from sluice.activities.deps import ActivityDeps
from sluice.db.events import REPLAY_PUBLISHED, lifecycle_row
from sluice.db.models import ExecutionLogRecord, ExecutionRecord
from sluice.metrics import REPLAY_OBJECTS_PUBLISHED
from sluice.replay_messages import ReplayMessages
from sluice.replay_sources import candidate_keys, candidate_pages
from sluice.services.lineage import Emission
from sluice.spill import read_page, read_pages, replay_keys_prefix, spill_prefix, write_spill
from sluice.storage.base import ObjectStorage
from sluice.storage.keys import validate_key
from sluice.workflow_io import (
    LIST_REPLAY_KEYS,
    LIST_REPLAY_OBJECTS,
    MAX_REPLAY_ERRORS,
    PUBLISH_REPLAY_CHUNK,
    PUBLISH_REPLAY_KEYS,
    RECORD_REPLAY_PUBLISHED,
    REPLAY_KEYS_SIGNAL,
    ReplayChunkTask,
    ReplayListing,
    ReplayRecordTask,
    ReplaySpec,
    SpillRef,
    execution_id_of,
)

CHECK_CONCURRENCY = 64  # keys looked up at once
LINEAGE_CHUNK = 500
LINEAGE_AHEAD = 2  # lineage chunks being written while the listing goes on
MANIFEST_PAGE = 1000  # keys per manifest page when a spec names no chunk size
ANNOUNCE_EVERY = 64  # pages, at most, between two announcements of a streamed replay


class ReplayActivities:
    def __init__(self, deps: ActivityDeps):
        self.deps = deps

    @activity.defn(name=LIST_REPLAY_OBJECTS)
    async def list_replay_objects(self, spec: ReplaySpec) -> ReplayListing:
        """List and publish every object in one go (replays started before chunked publishing)."""
        execution_id = execution_id_of(activity.info().workflow_id)
        listing = await self._publish(
            execution_id,
            spec,
            candidate_pages(spec, self.deps.storage, self.deps.sessions),
            spill_prefix(execution_id, f"replay-{spec.replay_batch_id}"),
        )
        await self._record(execution_id, spec, listing)
        return listing

    @activity.defn(name=LIST_REPLAY_KEYS)
    async def list_replay_keys(self, spec: ReplaySpec) -> SpillRef:
        """The replay's keys, written as a manifest of pages of `chunk_keys`: the chunks published
        next are fixed here, so a retried chunk publishes the same keys whatever storage lists then."""
        execution_id = execution_id_of(activity.info().workflow_id)
        listed = 0

        async def keys() -> AsyncIterator[list[str]]:
            nonlocal listed
            async for page in candidate_keys(spec, self.deps.storage, self.deps.sessions):
                listed += len(page)
                activity.heartbeat(listed)
                yield page

        return await write_spill(
            self.deps.storage,
            spill_prefix(execution_id, f"replay-{spec.replay_batch_id}-keys"),
            keys(),
            spec.chunk_keys or MANIFEST_PAGE,
        )

    @activity.defn(name=PUBLISH_REPLAY_CHUNK)
    async def publish_replay_chunk(self, task: ReplayChunkTask) -> ReplayListing:
        """Publish the keys of some manifest pages; returns their counts and message pages."""
        execution_id = execution_id_of(activity.info().workflow_id)
        return await self._publish(
            execution_id,
            task.spec,
            _manifest_keys(self.deps.storage, task.manifest, task.first_page, task.pages),
            spill_prefix(execution_id, f"replay-{task.spec.replay_batch_id}-{task.first_page:06d}"),
        )

    @activity.defn(name=RECORD_REPLAY_PUBLISHED)
    async def record_replay_published(self, task: ReplayRecordTask) -> None:
        await self._record(execution_id_of(activity.info().workflow_id), task.spec, task.listing)

    @activity.defn(name=PUBLISH_REPLAY_KEYS)
    async def publish_replay_keys(self, spec: ReplaySpec) -> ReplayListing:
        """List and check the replay's keys, write the publishable ones as pages (the route's
        batches derive their messages) and record the counts. Nothing is stored per object: each
        message's lineage row is written once, by the batch that handles it.

        A `streamed` replay announces its full pages to the workflow as they land, so its route
        starts on them while the listing goes on. A retry therefore keeps the full pages an
        earlier attempt wrote (their batches may have run) and publishes only the keys they miss."""
        info = activity.info()
        execution_id = execution_id_of(info.workflow_id)
        prefix = replay_keys_prefix(execution_id, spec.replay_batch_id)
        kept_pages, kept = (
            (0, set[str]()) if info.attempt == 1 else await _kept(self.deps.storage, prefix, spec)
        )
        counts = {"found": 0, "published": 0, "failed": 0}
        errors: list[str] = []
        announcer = _Announcer(spec, prefix, info) if spec.streamed else None
        try:
            ref = await write_spill(
                self.deps.storage,
                prefix,
                self._checked(
                    _skipping(candidate_pages(spec, self.deps.storage, self.deps.sessions), kept),
                    counts,
                    errors,
                ),
                spec.page_size,
                first_page=kept_pages,
                on_written=announcer.written if announcer is not None else None,
            )
        finally:
            if announcer is not None:
                await announcer.close()
        counts["found"] += len(kept)  # the kept keys were found and published before
        counts["published"] += len(kept)
        listing = _listing(counts, errors, ref.model_copy(update={"replay": spec.derivation()}))
        await self._record(execution_id, spec, listing)
        return listing

    async def _publish(
        self, execution_id: str, spec: ReplaySpec, keys: AsyncIterator[list[tuple[str, bool]]], prefix: str
    ) -> ReplayListing:
        """Check each key, record its lineage row and write its message to pages under `prefix`
        (replays started before their messages were derived)."""
        counts = {"found": 0, "published": 0, "failed": 0}
        errors: list[str] = []
        lineage: list[Emission] = []
        # Lineage chunks are written while the listing goes on (the writer commits them in order
        # of arrival); the listing is published once every chunk is committed.
        writing: deque[asyncio.Future[None]] = deque()

        async def record_lineage(rows: list[Emission]) -> None:
            writing.append(asyncio.ensure_future(self.deps.lineage.record(execution_id, rows)))
            if len(writing) > LINEAGE_AHEAD:
                await writing.popleft()

        derive = ReplayMessages(execution_id, spec.derivation())

        async def messages() -> AsyncIterator[list[dict[str, Any]]]:
            async for page in self._checked(keys, counts, errors):
                built = derive.messages(page)  # Messages, as their page lines
                for key, message in zip(page, built, strict=True):
                    lineage.append(
                        Emission(
                            correlation_id=message["metadata"]["correlation_id"],
                            parent_correlation_id=None,
                            route=spec.to_route,
                            source_route=None,
                            stage=spec.from_stage,
                            object_key=key,
                            replay_batch_id=spec.replay_batch_id,
                            payload=message["payload"],
                        )
                    )
                    if len(lineage) >= LINEAGE_CHUNK:
                        await record_lineage(lineage[:])
                        lineage.clear()
                yield built

        try:
            ref = await write_spill(self.deps.storage, prefix, messages(), spec.page_size)
            await record_lineage(lineage)
            await asyncio.gather(*writing)
        except BaseException:
            await asyncio.gather(*writing, return_exceptions=True)
            raise
        return _listing(counts, errors, ref)

    async def _checked(
        self, pages: AsyncIterator[list[tuple[str, bool]]], counts: dict[str, int], errors: list[str]
    ) -> AsyncIterator[list[str]]:
        """The keys that can be published, a page at a time, counting every key and naming the
        first failures. `pages`: (key, whether its listing proved it exists)."""
        async for page in pages:
            problems = await self._problems(page)
            publishable = [key for (key, _), problem in zip(page, problems, strict=True) if not problem]
            counts["found"] += len(page)
            counts["published"] += len(publishable)
            if len(publishable) < len(page):
                counts["failed"] += len(page) - len(publishable)
                for (key, _), problem in zip(page, problems, strict=True):
                    if problem and len(errors) < MAX_REPLAY_ERRORS:
                        errors.append(f"{key}: {problem}")
            activity.heartbeat(counts)
            if publishable:
                yield publishable

    async def _record(self, execution_id: str, spec: ReplaySpec, listing: ReplayListing) -> None:
        """Keep the publishing outcome on the execution record and in its logs."""
        async with self.deps.sessions() as session:
            record = await session.get(ExecutionRecord, execution_id)
            if record is not None:
                record.replay = {
                    **(record.replay or {}),
                    "replay_batch_id": spec.replay_batch_id,
                    **listing.counts(),
                }
                session.add(record)
            session.add(
                ExecutionLogRecord(
                    **lifecycle_row(
                        execution_id,
                        REPLAY_PUBLISHED,
                        f"replay published {listing.objects_published} of {listing.objects_found} object(s) "
                        f"from {spec.source_execution_id}/{spec.from_stage} ({spec.replay_source})"
                        + (f"; {listing.objects_failed} failed" if listing.objects_failed else ""),
                        level="warn" if listing.objects_failed else "info",
                        route=spec.to_route,
                        data={
                            "objects_found": listing.objects_found,
                            "objects_published": listing.objects_published,
                            "objects_failed": listing.objects_failed,
                            "replay_batch_id": spec.replay_batch_id,
                        },
                    )
                )
            )
            await session.commit()
        REPLAY_OBJECTS_PUBLISHED.labels(spec.to_route).inc(listing.objects_published)

    async def _problems(self, keys: list[tuple[str, bool]]) -> list[str | None]:
        """Why each key cannot be published (None: readable), checked a chunk at a time. A listed
        key is looked up unless its listing proved it (a local listing shows links that may dangle)."""
        problems: list[str | None] = [None] * len(keys)
        unproven: list[int] = []
        for i, (key, proven) in enumerate(keys):
            try:
                validate_key(key)
            except Exception as exc:
                problems[i] = f"{type(exc).__name__}: {exc}"
                continue
            if not proven:
                unproven.append(i)
        for start in range(0, len(unproven), CHECK_CONCURRENCY):
            looked_up = unproven[start : start + CHECK_CONCURRENCY]
            try:
                found = await self.deps.storage.exists_many([keys[i][0] for i in looked_up])
            except Exception as exc:
                for i in looked_up:
                    problems[i] = f"{type(exc).__name__}: {exc}"
                continue
            for i, ok in zip(looked_up, found, strict=True):
                if not ok and problems[i] is None:
                    problems[i] = "object does not exist or cannot be read"
        return problems


def _listing(counts: dict[str, int], errors: list[str], spill: SpillRef) -> ReplayListing:
    return ReplayListing(
        objects_found=counts["found"],
        objects_published=counts["published"],
        objects_failed=counts["failed"],
        errors=errors,
        spill=spill,
    )


async def _manifest_keys(
    storage: ObjectStorage, manifest: SpillRef, first: int, pages: int
) -> AsyncIterator[list[tuple[str, bool]]]:
    """The listed keys of some manifest pages (looked up again: they were listed a while ago)."""
    for page in range(first, min(first + pages, manifest.page_count)):
        yield [(from_json(line), False) for line in await read_page(storage, manifest.prefix, page)]


async def _kept(storage: ObjectStorage, prefix: str, spec: ReplaySpec) -> tuple[int, set[str]]:
    """The full pages an earlier attempt wrote, in order from the first (a partial or missing
    page ends them: it was never announced), and the keys they hold."""
    keys: set[str] = set()
    pages = 0
    async for lines in read_pages(storage, prefix):
        if len(lines) < spec.page_size:
            break
        keys.update(from_json(line) for line in lines)
        pages += 1
    return pages, keys


async def _skipping(
    pages: AsyncIterator[list[tuple[str, bool]]], kept: set[str]
) -> AsyncIterator[list[tuple[str, bool]]]:
    if not kept:
        async for page in pages:
            yield page
        return
    async for page in pages:
        if rest := [item for item in page if item[0] not in kept]:
            yield rest


class _Announcer:
    """Signals the workflow, in order, as the full pages written reach 1, 2, 4, ... and then every
    `ANNOUNCE_EVERY` pages: the first as soon as one page has landed, a few signals for most
    replays, and a route that never waits long on a slow listing of a huge one."""

    def __init__(self, spec: ReplaySpec, prefix: str, info: activity.Info):
        self.ref = SpillRef(prefix=prefix, total=0, page_size=spec.page_size, replay=spec.derivation())
        self.handle = activity.client().get_workflow_handle(info.workflow_id, run_id=info.workflow_run_id)
        self.next_at = 1
        self.sending: asyncio.Task[None] | None = None

    def written(self, pages: int) -> None:
        if pages < self.next_at:
            return
        while self.next_at <= pages:
            self.next_at = min(self.next_at * 2, self.next_at + ANNOUNCE_EVERY)
        self.sending = asyncio.ensure_future(self._send(self.sending, pages * self.ref.page_size))

    async def _send(self, before: asyncio.Task[None] | None, total: int) -> None:
        if before is not None:
            await before
        try:
            await self.handle.signal(REPLAY_KEYS_SIGNAL, self.ref.model_copy(update={"total": total}))
        except Exception as exc:  # the activity's result announces every page anyway
            activity.logger.warning("could not announce %d published key(s): %s", total, exc)

    async def close(self) -> None:
        """Wait for the signals sent: each reaches the workflow before the activity's result."""
        if self.sending is not None:
            await asyncio.shield(self.sending)
