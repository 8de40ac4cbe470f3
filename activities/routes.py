"""The route activity: run a handler over one batch of messages."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from sluice.activities.deps import ActivityDeps
from sluice.db.models import ExecutionLogRecord
from sluice.durations import parse_duration
from sluice.errors import NON_RETRYABLE_HANDLER_ERRORS
from sluice.handlers.context import AsyncRouteContext, BatchState, LogEntry, SyncRouteContext
from sluice.handlers.registry import resolve_handler
from sluice.ids import ClusteredIds, derived_id
from sluice.logcontext import batch_context, level_number, message_context
from sluice.messages import Message
from sluice.metrics import MESSAGES_PROCESSED, OBJECTS_WRITTEN, ROUTE_BATCH_SECONDS
from sluice.spill import KeyPages, load_batch, spill_prefix, write_spill
from sluice.storage.base import ObjectNotFoundError
from sluice.workflow_io import (
    RUN_ROUTE,
    SPILL_MESSAGES,
    AttemptLedger,
    RouteResult,
    RouteTask,
    SpillRef,
    SpillTask,
)


class RouteTimeout(TimeoutError):
    """The batch ran longer than the route's `timeout`: a handler failure like any exception."""


def _ledger(info: activity.Info) -> AttemptLedger:
    """What earlier attempts of this batch spent (none on the first attempt)."""
    details = info.heartbeat_details
    if details and isinstance(details[0], dict):
        return AttemptLedger.model_validate(details[0])
    return AttemptLedger()


LOG_FLUSH_SECONDS = 0.5
STORED_LEVEL = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn"}


def _sink(state: BatchState) -> Callable[[logging.LogRecord, str | None], None]:
    """Where a batch's log records go: its buffer of execution logs (shipped while it runs)."""

    def store(record: logging.LogRecord, correlation_id: str | None) -> None:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if record.stack_info:
            message += "\n" + record.stack_info
        level = STORED_LEVEL.get(record.levelno, "error" if record.levelno > logging.WARNING else "debug")
        state.logs.append(LogEntry(level, message, state.route, correlation_id))

    return store


class RouteActivities:
    def __init__(self, deps: ActivityDeps):
        self.deps = deps
        self.key_pages = KeyPages()

    @activity.defn(name=RUN_ROUTE)
    async def run_route(self, task: RouteTask) -> RouteResult:
        started = time.perf_counter()
        outcome = "failure"
        try:
            result = await self._run_route(task)
            outcome = "success"
            MESSAGES_PROCESSED.labels(task.pipeline, task.route.name).inc(result.processed)
            OBJECTS_WRITTEN.labels(task.pipeline, task.route.name).inc(result.objects_written)
            return result
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except ApplicationError as exc:
            outcome = "worker_shutdown" if exc.type == "WorkerShutdown" else "failure"
            raise
        finally:
            ROUTE_BATCH_SECONDS.labels(task.pipeline, task.route.name, outcome).observe(
                time.perf_counter() - started
            )

    async def _run_route(self, task: RouteTask) -> RouteResult:
        info = activity.info()
        route = task.route
        state = BatchState(
            execution_id=task.execution_id,
            route=route.name,
            stage=route.stage,
            next_routes=list(route.next),
            params={**task.params, **route.params},
            config_hash=task.config_hash,
            storage=self.deps.storage,
            settings=self.deps.settings,
            worker_id=self.deps.worker_id,
            read_prefixes=tuple(f"{e}/" for e in task.read_executions),
            # Deterministic per activity: a retry overwrites the same pages.
            spill_prefix=lambda target: spill_prefix(
                task.execution_id, f"{info.workflow_run_id}-{info.activity_id}-{target}"
            ),
            page_sizes=task.spill_page_sizes,
            store_emissions=lambda chunk: self.deps.lineage.record(task.execution_id, chunk),
            message_id=ClusteredIds(task.execution_id).id if task.clustered_ids else derived_id,
        )
        ledger = _ledger(info)
        state.ledger = ledger
        stop_beating = asyncio.Event()
        heartbeat: asyncio.Task[None] | None = None

        def start_beating() -> None:
            nonlocal heartbeat
            heartbeat = asyncio.create_task(
                _heartbeat_until(stop_beating, state, info.heartbeat_timeout, self._flush_logs)
            )

        # Most batches end before their first heartbeat or log flush is due: they start no task.
        starting = asyncio.get_running_loop().call_later(_first_due(info.heartbeat_timeout), start_beating)
        try:
            handler = resolve_handler(route.handler)
            try:
                messages = await load_batch(self.deps.storage, task.batch, task.execution_id, self.key_pages)
            except ObjectNotFoundError as exc:
                raise ApplicationError(f"message page missing: {exc}", type="SpillMissing") from None
            state.inputs.update(key for m in messages if (key := m.object_key))
            limit = parse_duration(route.timeout).total_seconds()
            threshold = level_number(self.deps.settings.handler_log_level)
            handling = time.perf_counter()
            try:
                async with asyncio.timeout(limit):
                    with batch_context(task.execution_id, route.name, _sink(state), threshold):
                        is_async = inspect.iscoroutinefunction(handler)  # once: it is per-message work
                        for message in messages:
                            with message_context(message.metadata.correlation_id):
                                await self._invoke(handler, is_async, message, state)
                            state.processed += 1
                            if state.needs_flush:  # checked here: most messages leave nothing due
                                await state.flush_due()
            except TimeoutError:
                raise RouteTimeout(
                    f"the batch took longer than the route's timeout ({route.timeout})"
                ) from None
            handled_in = time.perf_counter() - handling
            outputs = await state.finish_outputs()
            await self.deps.lineage.record(
                state.execution_id,
                state.emissions,
                route=route.name,
                processed=messages,
                replay=task.batch.spill.replay if task.batch.spill is not None else None,
            )
            return RouteResult(
                processed=state.processed,
                objects_written=len(state.objects),
                rows_written=state.rows_written if state.rows_written is not None else state.counted_rows,
                attempt=info.attempt,
                handler_failures=ledger.handler_failures,
                outputs=outputs,
                seconds=round(handled_in, 6),
            )
        except NON_RETRYABLE_HANDLER_ERRORS as exc:
            state.logs.append(LogEntry("error", f"{type(exc).__name__}: {exc}", route.name, None))
            raise ApplicationError(
                str(exc),
                {
                    "handler_failures": ledger.handler_failures + 1,
                    "worker_losses": ledger.losses(info.attempt),
                },
                type=type(exc).__name__,
                non_retryable=True,
            ) from None
        except asyncio.CancelledError:
            if activity.is_worker_shutdown():
                # The worker is stopping, not the execution: hand the batch back to Temporal
                # without spending a handler retry (another worker picks it up).
                state.logs.append(
                    LogEntry("warn", "worker stopping: batch handed back", route.name, None, kind="lifecycle")
                )
                raise ApplicationError(
                    "worker shut down while handling the batch", type="WorkerShutdown"
                ) from None
            state.logs.append(
                LogEntry("warn", "cancelled while handling a batch", route.name, None, kind="lifecycle")
            )
            raise
        except ApplicationError:
            raise
        except Exception as exc:
            # The handler failed: one attempt of the route's own budget. The count travels to the
            # next attempt in the heartbeat details, so a lost worker in between spends nothing.
            ledger.handler_failures += 1
            activity.heartbeat(ledger.model_dump())
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
            state.logs.append(
                LogEntry("error", f"attempt {info.attempt} failed: {tb}", route.name, None, kind="lifecycle")
            )
            if ledger.handler_failures >= route.retry.max_attempts:
                raise ApplicationError(
                    str(exc),
                    {
                        "handler_failures": ledger.handler_failures,
                        "worker_losses": ledger.losses(info.attempt),
                    },
                    type=type(exc).__name__,
                    non_retryable=True,
                ) from exc
            raise
        finally:
            # Stopped, never cancelled: a cancel in the middle of a log write would lose its lines.
            starting.cancel()
            stop_beating.set()
            if heartbeat is not None:
                await asyncio.shield(heartbeat)
            await asyncio.shield(self._flush_logs(state))

    async def _invoke(self, handler: Any, is_async: bool, message: Message, state: BatchState) -> None:
        if is_async:
            ctx: AsyncRouteContext | SyncRouteContext = AsyncRouteContext(state, message)
            result = await handler(message, ctx)
        else:
            ctx = SyncRouteContext(state, message, asyncio.get_running_loop())
            result = await asyncio.to_thread(handler, message, ctx)
            if inspect.isawaitable(result):
                result = await result
        # A returned dict (or list of dicts) is sent on to every `next` route.
        if isinstance(result, dict):
            ctx._send(result, None)
        elif isinstance(result, list) and all(isinstance(r, dict) for r in result):
            for item in result:
                ctx._send(item, None)

    async def _flush_logs(self, state: BatchState) -> None:
        """Store the handler's lines so far; they leave the buffer only once committed (a failed
        write is tried again with the next flush)."""
        if not state.logs:
            return
        entries = state.logs[:]
        rows = [
            ExecutionLogRecord(
                execution_id=state.execution_id,
                route=entry.route,
                level=entry.level,
                message=entry.message,
                kind=entry.kind,
                correlation_id=entry.correlation_id,
                timestamp=entry.timestamp,
            )
            for entry in entries
        ]
        try:
            async with self.deps.sessions() as session:
                session.add_all(rows)
                await session.commit()
        except Exception:  # logs must never fail the batch that produced them
            activity.logger.exception("could not store %d log line(s); will try again", len(rows))
            return
        del state.logs[: len(entries)]

    @activity.defn(name=SPILL_MESSAGES)
    async def spill_messages(self, task: SpillTask) -> SpillRef:
        info = activity.info()
        prefix = spill_prefix(task.execution_id, f"{info.workflow_run_id}-{info.activity_id}-{task.route}")
        return await write_spill(self.deps.storage, prefix, task.messages, task.page_size)


async def _heartbeat_until(
    stop: asyncio.Event,
    state: BatchState,
    every: timedelta | None,
    flush: Callable[[BatchState], Awaitable[None]],
) -> None:
    """Heartbeat on the handler's behalf, so cancellation reaches handlers that never heartbeat,
    and ship the handler's log lines while it runs, so live streams show them as they happen.
    Started once the first of the two is due (`_first_due`)."""
    interval = _heartbeat_interval(every)
    loop = asyncio.get_running_loop()
    next_beat = loop.time() + interval - _first_due(every)  # the first one counts from the batch's start
    while not stop.is_set():
        if loop.time() >= next_beat:
            state.ledger.processed = state.processed
            activity.heartbeat(state.ledger.model_dump())
            next_beat = loop.time() + interval
        await flush(state)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), min(interval, LOG_FLUSH_SECONDS))


def _heartbeat_interval(every: timedelta | None) -> float:
    return max((every.total_seconds() / 3) if every else 10.0, 0.2)


def _first_due(every: timedelta | None) -> float:
    """Seconds from a batch's start until its first heartbeat or log flush is due."""
    return min(_heartbeat_interval(every), LOG_FLUSH_SECONDS)
