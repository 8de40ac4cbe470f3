"""ExecutionWorkflow: one durable workflow per pipeline execution.

Messages flow along `next` edges as activity batches. The workflow holds only small messages and
references to spilled message pages; object bytes stay in storage. It bounds activities in flight
per route (`concurrency`) and per execution (`max_in_flight`), and continues as new when Temporal
suggests it (or after `activities_per_run` activities) so history stays far below its limits.
"""

from __future__ import annotations

import asyncio
from collections import deque
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, RetryState
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from sluice.durations import parse_duration
    from sluice.graph import ancestors
    from sluice.ids import derived_id
    from sluice.messages import Message, MessageMetadata
    from sluice.pipeline_config import RouteConfig
    from sluice.workflow_io import (
        FINALIZE_EXECUTION,
        LIST_REPLAY_OBJECTS,
        REPLAY_PUBLISHED_UPDATE,
        RUN_ROUTE,
        SPILL_MESSAGES,
        WORKFLOW_NAME,
        CarriedState,
        ExecutionInput,
        ExecutionProgress,
        ExecutionSummary,
        FinalizeInput,
        MessageBatch,
        QueueEntry,
        ReplayListing,
        RoutedOutput,
        RouteProgress,
        RouteResult,
        RouteTask,
        SpillRef,
        SpillTask,
    )

SPILL_CHUNK = 500
INLINE_CARRY_LIMIT = 200
MIN_PAGE = 100


@workflow.defn(name=WORKFLOW_NAME)
class ExecutionWorkflow:
    @workflow.init
    def __init__(self, inp: ExecutionInput) -> None:
        self._inp = inp
        self._routes: dict[str, RouteConfig] = {r.name: r for r in inp.pipeline.routes}
        graph = {r.name: [t for t in r.next if t in self._routes] for r in inp.pipeline.routes}
        self._ancestors = ancestors(graph)
        self._upstream_stages: dict[str, list[str]] = {name: [] for name in self._routes}
        for r in inp.pipeline.routes:
            for t in graph[r.name]:
                if r.stage and r.stage not in self._upstream_stages[t]:
                    self._upstream_stages[t].append(r.stage)
        state = inp.state
        if state is not None:
            self._progress = {p.route: p for p in state.routes}
            self._queues = {n: deque(state.queues.get(n, [])) for n in self._routes}
            self._collect_pending = dict(state.collect_pending)
            self._started_at = state.started_at
            self._runs = state.runs + 1
            self._activities_total = state.activities_total
            self._replay_listing = state.replay_listing
        else:
            self._progress = {
                r.name: RouteProgress(route=r.name, position=i) for i, r in enumerate(inp.pipeline.routes)
            }
            self._queues = {n: deque() for n in self._routes}
            self._collect_pending = {}
            self._started_at = workflow.now()
            self._runs = 1
            self._activities_total = 0
            self._replay_listing = None
        self._activities_this_run = 0
        self._in_flight_total = 0
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._task_seq = 0
        self._changed = False
        self._draining = False
        self._failure: str | None = None
        self._status = "running"

    # -- queries ------------------------------------------------------------------------------
    @workflow.query(name="progress")
    def progress(self) -> ExecutionProgress:
        return ExecutionProgress(
            execution_id=self._inp.execution_id,
            status=self._status,
            started_at=self._started_at,
            runs=self._runs,
            activities=self._activities_total,
            routes=list(self._progress.values()),
            error=self._failure,
            replay=self._replay_listing,
        )

    @workflow.update(name=REPLAY_PUBLISHED_UPDATE)
    async def replay_published(self) -> ReplayListing:
        """Returns once the replay's objects are published as messages (what the replay APIs wait for)."""
        await workflow.wait_condition(lambda: self._replay_listing is not None or self._status != "running")
        if self._replay_listing is None:
            raise ApplicationError(f"execution ended ({self._status}) before its replay was published")
        return self._replay_listing

    # -- main loop ----------------------------------------------------------------------------
    @workflow.run
    async def run(self, inp: ExecutionInput) -> ExecutionSummary:
        try:
            if inp.state is None:
                if inp.init_message is not None and inp.init_route:
                    self._enqueue(inp.init_route, QueueEntry(messages=[inp.init_message]))
                if inp.replay is not None:
                    await self._publish_replay()
            await self._pump()
        except asyncio.CancelledError:
            await self._stop_all()
            self._status = "cancelled"
            self._settle_routes("cancelled")
            await self._finalize("cancelled", "cancelled by request")
            raise
        if self._failure is not None:
            self._status = "failed"
            self._settle_routes("cancelled")
            await self._finalize("failed", self._failure)
            raise ApplicationError(self._failure, type="ExecutionFailed", non_retryable=True)
        if self._draining and self._has_work():
            await self._spill_inline_queues()
            workflow.continue_as_new(
                ExecutionInput(
                    execution_id=inp.execution_id,
                    pipeline=inp.pipeline,
                    config_hash=inp.config_hash,
                    heartbeat_timeout_seconds=inp.heartbeat_timeout_seconds,
                    max_in_flight=inp.max_in_flight,
                    activities_per_run=inp.activities_per_run,
                    state=CarriedState(
                        started_at=self._started_at,
                        routes=list(self._progress.values()),
                        queues={n: list(q) for n, q in self._queues.items() if q},
                        collect_pending=self._collect_pending,
                        runs=self._runs,
                        activities_total=self._activities_total,
                        replay_listing=self._replay_listing,
                    ),
                )
            )
        self._status = "completed"
        self._settle_routes("completed")
        await self._finalize("completed", None)
        routes = list(self._progress.values())
        return ExecutionSummary(
            execution_id=inp.execution_id,
            status="completed",
            messages_processed=sum(p.messages_processed for p in routes),
            objects_written=sum(p.objects_written for p in routes),
            routes=routes,
        )

    async def _pump(self) -> None:
        while True:
            if not self._draining and (
                self._activities_this_run >= self._inp.activities_per_run
                or workflow.info().is_continue_as_new_suggested()
            ):
                self._draining = True
            if self._failure is None and not self._draining:
                self._dispatch()
            if self._in_flight_total == 0 and (
                self._failure is not None or self._draining or not self._has_work()
            ):
                return
            self._changed = False
            await workflow.wait_condition(lambda: self._changed)

    def _has_work(self) -> bool:
        return any(self._queues[n] for n in self._routes) or any(self._collect_pending.values())

    def _idle(self, name: str) -> bool:
        return (
            not self._queues[name]
            and not self._progress[name].in_flight
            and not self._collect_pending.get(name)
        )

    def _dispatch(self) -> None:
        for name, route in self._routes.items():
            prog = self._progress[name]
            if route.collect:
                if (
                    self._collect_pending.get(name)
                    and not prog.in_flight
                    and self._in_flight_total < self._inp.max_in_flight
                    and all(self._idle(a) for a in self._ancestors[name])
                ):
                    self._start(name, MessageBatch(messages=[self._collect_message(name)]))
                continue
            while (
                self._queues[name]
                and prog.in_flight < route.concurrency
                and self._in_flight_total < self._inp.max_in_flight
            ):
                batch = self._take(name)
                if batch is None:
                    break
                self._start(name, batch)

    def _collect_message(self, name: str) -> Message:
        count = self._collect_pending.pop(name, 0)
        generation = self._progress[name].messages_processed
        return Message(
            payload={"collected": count, "stages": self._upstream_stages[name]},
            metadata=MessageMetadata(
                execution_id=self._inp.execution_id,
                correlation_id=derived_id(self._inp.execution_id, name, "collect", generation),
            ),
        )

    def _take(self, name: str) -> MessageBatch | None:
        queue = self._queues[name]
        limit = self._routes[name].batch_size
        head = queue[0]
        if head.spill is not None:
            ref = head.spill
            page, start = divmod(ref.offset, ref.page_size)
            count = min(limit, ref.page_size - start, ref.total - ref.offset)
            ref.offset += count
            if ref.offset >= ref.total:
                queue.popleft()
            self._progress[name].queued -= count
            return MessageBatch(
                spill=SpillRef(prefix=ref.prefix, total=ref.total, page_size=ref.page_size),
                page=page,
                start=start,
                count=count,
            )
        taken: list[Message] = []
        while queue and queue[0].messages is not None and len(taken) < limit:
            entry = queue[0]
            need = limit - len(taken)
            assert entry.messages is not None
            taken.extend(entry.messages[:need])
            entry.messages = entry.messages[need:]
            if not entry.messages:
                queue.popleft()
        self._progress[name].queued -= len(taken)
        return MessageBatch(messages=taken) if taken else None

    def _enqueue(self, name: str, entry: QueueEntry) -> None:
        prog = self._progress[name]
        size = entry.size
        if size <= 0:
            return
        prog.messages_in += size
        if self._routes[name].collect:
            self._collect_pending[name] = self._collect_pending.get(name, 0) + size
            return
        queue = self._queues[name]
        last = queue[-1] if queue else None
        if (
            entry.messages is not None
            and last is not None
            and last.messages is not None
            and len(last.messages) < 1000
        ):
            last.messages.extend(entry.messages)  # entries stay bounded, so _take's slicing stays cheap
        else:
            queue.append(entry)
        prog.queued += size

    def _start(self, name: str, batch: MessageBatch) -> None:
        prog = self._progress[name]
        if prog.started_at is None:
            prog.started_at = workflow.now()
        prog.status = "running"
        prog.in_flight += 1
        self._in_flight_total += 1
        self._activities_total += 1
        self._activities_this_run += 1
        self._task_seq += 1
        seq = self._task_seq
        self._tasks[seq] = asyncio.create_task(self._run_batch(seq, name, batch))

    async def _run_batch(self, seq: int, name: str, batch: MessageBatch) -> None:
        route = self._routes[name]
        prog = self._progress[name]
        task = RouteTask(
            execution_id=self._inp.execution_id,
            route=route,
            params=self._inp.pipeline.params,
            config_hash=self._inp.config_hash,
            batch=batch,
            spill_page_sizes={t: self._page_size(t) for t in route.next if t in self._routes},
        )
        try:
            result: RouteResult = await workflow.execute_activity(
                RUN_ROUTE,
                task,
                result_type=RouteResult,
                task_queue=route.task_queue,
                start_to_close_timeout=parse_duration(route.timeout),
                heartbeat_timeout=self._heartbeat_timeout(route),
                retry_policy=RetryPolicy(
                    initial_interval=parse_duration(route.retry.backoff),
                    backoff_coefficient=route.retry.backoff_coefficient,
                    maximum_interval=max(
                        parse_duration(route.retry.max_backoff), parse_duration(route.retry.backoff)
                    ),
                    maximum_attempts=route.retry.max_attempts,
                    non_retryable_error_types=[
                        "NonRetryableHandlerError",
                        "HandlerUsageError",
                        "HandlerImportError",
                    ],
                ),
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                summary=f"{name}: {batch.size} message(s)",
            )
        except ActivityError as err:
            if not isinstance(err.cause, CancelledError):
                prog.status = "failed"
                prog.error = _describe(err)
                if err.retry_state == RetryState.MAXIMUM_ATTEMPTS_REACHED:
                    prog.retries += route.retry.max_attempts - 1
                if self._failure is None:
                    self._failure = f"route {name!r} failed: {prog.error}"
                    self._cancel_others(seq)
        else:
            prog.messages_processed += result.processed
            prog.objects_written += result.objects_written
            if result.rows_written is not None:
                prog.rows_written = (prog.rows_written or 0) + result.rows_written
            prog.retries += max(result.attempt - 1, 0)
            prog.messages_out += result.messages_out
            prog.completed_at = workflow.now()
            for output in result.outputs:
                self._enqueue_output(output)
        finally:
            prog.in_flight -= 1
            self._in_flight_total -= 1
            self._tasks.pop(seq, None)
            self._changed = True

    def _enqueue_output(self, output: RoutedOutput) -> None:
        if output.route not in self._routes:
            return
        if output.spill is not None:
            self._enqueue(output.route, QueueEntry(spill=output.spill))
        elif output.messages:
            self._enqueue(output.route, QueueEntry(messages=output.messages))

    def _page_size(self, name: str) -> int:
        """A whole number of batches per page (a batch never spans pages), at least MIN_PAGE messages."""
        batch = self._routes[name].batch_size
        return batch * -(-MIN_PAGE // batch)

    def _heartbeat_timeout(self, route: RouteConfig) -> timedelta:
        if route.heartbeat_timeout is not None:
            return parse_duration(route.heartbeat_timeout)
        return timedelta(seconds=self._inp.heartbeat_timeout_seconds)

    def _cancel_others(self, seq: int) -> None:
        for other, task in self._tasks.items():
            if other != seq:
                task.cancel()

    async def _stop_all(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _settle_routes(self, unfinished: str) -> None:
        now = workflow.now()
        for prog in self._progress.values():
            if prog.status == "failed":
                continue
            if prog.status == "pending":
                prog.status = "skipped" if unfinished == "completed" else unfinished
            elif prog.status == "running":
                prog.status = "completed" if unfinished == "completed" else unfinished
            prog.queued = 0
            prog.in_flight = 0
            if prog.started_at is not None and prog.completed_at is None:
                prog.completed_at = now

    # -- phases that call activities ----------------------------------------------------------
    async def _publish_replay(self) -> None:
        replay = self._inp.replay
        assert replay is not None
        try:
            listing: ReplayListing = await workflow.execute_activity(
                LIST_REPLAY_OBJECTS,
                replay.model_copy(update={"page_size": self._page_size(replay.to_route)}),
                result_type=ReplayListing,
                start_to_close_timeout=timedelta(minutes=30),
                heartbeat_timeout=timedelta(seconds=max(self._inp.heartbeat_timeout_seconds, 10)),
                retry_policy=RetryPolicy(maximum_attempts=5, maximum_interval=timedelta(seconds=10)),
                summary=f"publish {replay.from_stage} -> {replay.to_route}",
            )
        except ActivityError as err:
            self._failure = f"publishing the replay failed: {_describe(err)}"
            return
        if listing.spill is not None and listing.spill.total:
            self._enqueue(replay.to_route, QueueEntry(spill=listing.spill))
        self._replay_listing = listing.model_copy(update={"spill": None})

    async def _spill_inline_queues(self) -> None:
        for name, queue in self._queues.items():
            inline = [m for entry in queue if entry.messages is not None for m in entry.messages]
            if len(inline) <= INLINE_CARRY_LIMIT:
                continue
            kept = [entry for entry in queue if entry.spill is not None]
            for i in range(0, len(inline), SPILL_CHUNK):
                ref: SpillRef = await workflow.execute_activity(
                    SPILL_MESSAGES,
                    SpillTask(
                        execution_id=self._inp.execution_id,
                        route=name,
                        messages=inline[i : i + SPILL_CHUNK],
                        page_size=self._page_size(name),
                    ),
                    result_type=SpillRef,
                    start_to_close_timeout=timedelta(minutes=5),
                    retry_policy=RetryPolicy(maximum_attempts=10),
                )
                kept.append(QueueEntry(spill=ref))
            self._queues[name] = deque(kept)

    async def _finalize(self, status: str, error: str | None) -> None:
        await workflow.execute_activity(
            FINALIZE_EXECUTION,
            FinalizeInput(
                execution_id=self._inp.execution_id,
                status=status,
                error=error,
                completed_at=workflow.now(),
                started_at=self._started_at,
                routes=list(self._progress.values()),
            ),
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30), maximum_attempts=0),
            summary=f"record {status}",
        )


def _describe(err: ActivityError) -> str:
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return f"{cause.type or 'Error'}: {cause.message}"
    if cause is not None:
        return f"{type(cause).__name__}: {cause}"
    return str(err)
