"""What a handler sees: `ctx.read`, `ctx.emit`, `ctx.send`, `ctx.log` (a standard logger),
`ctx.params`.

Async handlers get AsyncRouteContext (awaitable methods); plain functions run in a thread and get
SyncRouteContext, whose methods block on the activity's event loop. Both share one BatchState, so
the activity collects every output of a batch in one place.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic_core import to_json

from sluice.errors import HandlerUsageError
from sluice.ids import derived_id
from sluice.logcontext import HANDLER_LOGGER, level_number
from sluice.messages import Message
from sluice.services.lineage import Emission
from sluice.settings import Settings
from sluice.spill import OutputSpool
from sluice.storage.base import ObjectStorage
from sluice.storage.keys import is_sidecar, object_key, stage_prefix
from sluice.storage.stage import encode_data, write_stage_object
from sluice.tabular import NotTabular, count_rows, format_of
from sluice.workflow_io import AttemptLedger, RoutedOutput

T = TypeVar("T")
MAX_PAYLOAD_BYTES = 64 * 1024
ROW_COUNT_INLINE = 256 * 1024  # bigger outputs are counted off the event loop
LEVELS = ("debug", "info", "warn", "error")
INLINE_OUTPUTS = 100  # messages per target that travel in the activity result; more are spilled
DEFAULT_PAGE_SIZE = 100
EMISSION_CHUNK = 1000  # lineage rows stored while a batch runs, when it produces this many


@dataclass
class LogEntry:
    level: str
    message: str
    route: str | None
    correlation_id: str | None
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))
    kind: str = "handler"


@dataclass
class BatchState:
    execution_id: str
    route: str
    stage: str | None
    next_routes: list[str]
    params: dict[str, Any]
    config_hash: str
    storage: ObjectStorage
    settings: Settings
    worker_id: str
    spill_prefix: Callable[[str], str]  # where a target's pages go (deterministic per activity)
    page_sizes: dict[str, int] = field(default_factory=dict)
    # Ids of the messages the batch sends: `ClusteredIds(execution).id` (sorted with the execution),
    # or `derived_id` for batches scheduled before (RouteTask.clustered_ids).
    message_id: Callable[..., str] = derived_id
    # Stores lineage rows while the batch runs (big fan-outs); None keeps them for the end.
    store_emissions: Callable[[list[Emission]], Awaitable[None]] | None = None
    spools: dict[str, OutputSpool] = field(default_factory=dict)
    emissions: list[Emission] = field(default_factory=list)
    logs: list[LogEntry] = field(default_factory=list)
    objects: set[int] = field(default_factory=set)  # hashes of the keys stored: small at 100k
    rows_written: int | None = None  # what the handler reported (ctx.rows)
    counted_rows: int | None = None  # rows of its tabular outputs, counted as they are stored
    processed: int = 0
    ledger: AttemptLedger = field(default_factory=AttemptLedger)  # what this batch's attempts spent
    read_prefixes: tuple[str, ...] = ()  # executions whose objects ctx.read may return
    inputs: set[str] = field(default_factory=set)  # object keys the batch's messages carry
    _flushing: asyncio.Lock = field(default_factory=asyncio.Lock)

    def spool(self, target: str) -> OutputSpool:
        spool = self.spools.get(target)
        if spool is None:
            spool = self.spools[target] = OutputSpool(
                self.storage,
                target,
                self.spill_prefix(target),
                self.page_sizes.get(target, DEFAULT_PAGE_SIZE),
                INLINE_OUTPUTS,
            )
        return spool

    @property
    def needs_flush(self) -> bool:
        """A full page or a chunk of lineage rows is ready to be written."""
        if self.store_emissions is not None and len(self.emissions) >= EMISSION_CHUNK:
            return True
        return any(s.due for s in self.spools.values()) if self.spools else False

    async def flush_due(self) -> None:
        """Write what is ready so memory stays flat however much the handler emits: full
        message pages, and lineage rows in chunks. Serialized: concurrent emits share it."""
        if not self.needs_flush:
            return
        async with self._flushing:
            for spool in self.spools.values():
                await spool.flush()
            if self.store_emissions is not None and len(self.emissions) >= EMISSION_CHUNK:
                chunk, self.emissions = self.emissions, []
                await self.store_emissions(chunk)

    async def finish_outputs(self) -> list[RoutedOutput]:
        async with self._flushing:
            return [await spool.result() for spool in self.spools.values()]

    def readable(self, key: str) -> bool:
        return (
            key.startswith(f"{self.execution_id}/")
            or key in self.inputs
            or key.startswith(self.read_prefixes)
        )


class RouteLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """`ctx.log`: a standard logger (`ctx.log.info("collected %s", key)`, `exc_info`, `stack_info`,
    `extra`, `exception()`, `isEnabledFor`) named `sluice.handlers.<route>`, whose records are
    stored as this route's execution logs. `ctx.log("message")` and `ctx.log("message", "warn")`
    keep working."""

    def __init__(self, route: str, correlation_id: str | None):
        super().__init__(logging.getLogger(f"{HANDLER_LOGGER}.{route}"), {"correlation_id": correlation_id})

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs

    def __call__(self, message: object, level: str = "info") -> None:
        self.log(level_number(level), "%s", message)

    warn = logging.LoggerAdapter.warning


class RouteContext:
    """State and the synchronous-safe parts shared by both context flavours."""

    def __init__(self, state: BatchState, message: Message):
        self._state = state
        self.message = message
        self._sends = 0

    @functools.cached_property
    def log(self) -> RouteLogger:
        """Made when a handler first logs: most messages of a fast route never do."""
        return RouteLogger(self._state.route, self.message.metadata.correlation_id)

    execution_id = property(lambda self: self._state.execution_id)
    route = property(lambda self: self._state.route)
    stage = property(lambda self: self._state.stage)
    params = property(lambda self: self._state.params)
    settings = property(lambda self: self._state.settings)
    next_routes = property(lambda self: list(self._state.next_routes))

    def rows(self, count: int) -> None:
        """Report rows written (shown as rows_written on the route and the run)."""
        self._state.rows_written = (self._state.rows_written or 0) + int(count)

    # -- core operations, always async ---------------------------------------------------
    async def _read(self, key: str) -> bytes:
        if not self._state.readable(key):
            raise HandlerUsageError(
                f"ctx.read({key!r}): not an object of this execution, of its replay ancestors or of "
                "the messages it was given"
            )
        return await self._state.storage.get(key)

    async def _emit(
        self,
        path: str,
        data: bytes | str | dict | list,
        content_type: str | None,
        payload: dict[str, Any] | None,
    ) -> str:
        st = self._state
        if not st.stage:
            raise HandlerUsageError(
                f"route {st.route!r} has no `stage:` to emit into; add one or use ctx.send()"
            )
        key = object_key(st.execution_id, st.stage, path)
        body, ctype = encode_data(data, content_type)
        await self._count_rows(key, body, ctype)
        meta = self.message.metadata
        await write_stage_object(
            st.storage,
            key,
            body,
            ctype,
            {
                "execution_id": st.execution_id,
                "stage": st.stage,
                "route": st.route,
                "correlation_id": meta.correlation_id,
                "parent_correlation_id": meta.parent_correlation_id,
                "replay_batch_id": meta.replay_batch_id,
                "config_hash": st.config_hash,
                "worker": st.worker_id,
            },
        )
        st.objects.add(hash(key))
        rel_path = key[len(st.execution_id) + len(st.stage) + 2 :]
        out_payload = {**(payload or {}), "object_key": key, "stage": st.stage, "path": rel_path}
        if st.next_routes:
            for target in st.next_routes:
                self._queue(target, out_payload, st.message_id(meta.correlation_id, key, target), key)
        else:
            st.emissions.append(
                Emission(
                    st.message_id(meta.correlation_id, key),
                    meta.correlation_id,
                    st.route,
                    st.route,
                    st.stage,
                    key,
                    meta.replay_batch_id,
                )
            )
        await st.flush_due()
        return key

    async def _count_rows(self, key: str, body: bytes, content_type: str) -> None:
        """Rows of a tabular output: the route's `rows_written` when the handler reports none."""
        fmt = format_of(key, content_type)
        if fmt is None:
            return
        try:
            rows = (
                count_rows(body, fmt)
                if len(body) < ROW_COUNT_INLINE
                else await asyncio.to_thread(count_rows, body, fmt)
            )
        except (NotTabular, ValueError):
            return
        self._state.counted_rows = (self._state.counted_rows or 0) + rows

    def _send(self, payload: dict[str, Any], to: list[str] | str | None) -> None:
        st = self._state
        targets = [to] if isinstance(to, str) else (to or st.next_routes)
        unknown = [t for t in targets if t not in st.next_routes]
        if unknown:
            raise HandlerUsageError(f"route {st.route!r} cannot send to {unknown}: not in its `next`")
        index = self._sends
        self._sends += 1
        for target in targets:
            cid = st.message_id(self.message.metadata.correlation_id, "send", index, target)
            self._queue(target, dict(payload), cid, payload.get("object_key"))

    def _queue(self, target: str, payload: dict[str, Any], correlation_id: str, key: str | None) -> None:
        st = self._state
        # Compact UTF-8 JSON, as the message travels; json.dumps with a `default` built an encoder
        # per message.
        size = len(to_json(payload, fallback=str))
        if size > MAX_PAYLOAD_BYTES:
            raise HandlerUsageError(
                f"message payload of {size} bytes exceeds {MAX_PAYLOAD_BYTES}: store data with ctx.emit() "
                "and pass its object_key"
            )
        meta = self.message.metadata
        # A plain dict in Message's shape: validated (in pydantic-core) only if it travels inline.
        st.spool(target).add(
            {
                "payload": payload,
                "metadata": {
                    "execution_id": st.execution_id,
                    "correlation_id": correlation_id,
                    "parent_correlation_id": meta.correlation_id,
                    "replay_batch_id": meta.replay_batch_id,
                    "source_route": st.route,
                },
            }
        )
        st.emissions.append(
            Emission(
                correlation_id,
                meta.correlation_id,
                target,
                st.route,
                st.stage if key else None,
                key,
                meta.replay_batch_id,
                payload,
            )
        )

    async def _list(self, stage: str | None = None, path: str | None = None) -> AsyncIterator[str]:
        prefix = stage_prefix(self._state.execution_id, stage or self._state.stage or "", path)
        async for key in self._state.storage.list(prefix):
            if not is_sidecar(key):
                yield key


class AsyncRouteContext(RouteContext):
    async def read(self, key: str) -> bytes:
        return await self._read(key)

    async def read_text(self, key: str) -> str:
        return (await self._read(key)).decode("utf-8")

    async def read_json(self, key: str) -> Any:
        return json.loads(await self._read(key))

    async def emit(
        self,
        path: str,
        data: bytes | str | dict | list,
        content_type: str | None = None,
        payload: dict[str, Any] | None = None,
    ) -> str:
        """Store `data` at {execution_id}/{stage}/{path} and message every `next` route."""
        return await self._emit(path, data, content_type, payload)

    async def send(self, payload: dict[str, Any], to: list[str] | str | None = None) -> None:
        """Message the `next` routes without storing an object."""
        self._send(payload, to)
        await self._state.flush_due()

    def list(self, stage: str | None = None, path: str | None = None) -> AsyncIterator[str]:
        """Keys stored by this execution under a stage (default: this route's), sidecars excluded."""
        return self._list(stage, path)


class SyncRouteContext(RouteContext):
    def __init__(self, state: BatchState, message: Message, loop: asyncio.AbstractEventLoop):
        super().__init__(state, message)
        self._loop = loop

    def _block(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def read(self, key: str) -> bytes:
        return self._block(self._read(key))

    def read_text(self, key: str) -> str:
        return self.read(key).decode("utf-8")

    def read_json(self, key: str) -> Any:
        return json.loads(self.read(key))

    def emit(
        self,
        path: str,
        data: bytes | str | dict | list,
        content_type: str | None = None,
        payload: dict[str, Any] | None = None,
    ) -> str:
        return self._block(self._emit(path, data, content_type, payload))

    def send(self, payload: dict[str, Any], to: list[str] | str | None = None) -> None:
        self._send(payload, to)
        if self._state.needs_flush:
            self._block(self._state.flush_due())

    def list(self, stage: str | None = None, path: str | None = None) -> list[str]:
        async def collect() -> list[str]:
            return [k async for k in self._list(stage, path)]

        return self._block(collect())
