"""ExecutionWorkflow: one durable workflow per pipeline execution.

Messages flow along `next` edges as activity batches. The workflow holds only small messages and
references to spilled message pages; object bytes stay in storage. What runs next is decided by
the pure `Scheduler` (queues, batching, `concurrency` per route, `max_in_flight` per execution,
collect routes); this class turns its decisions into activities, and continues as new when
Temporal suggests it (or after `activities_per_run` activities) so history stays small.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, RetryState
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from sluice.durations import parse_duration
    from sluice.errors import NON_RETRYABLE_ERROR_TYPES
    from sluice.pipeline_config import RouteConfig
    from sluice.workflow_io import (
        FINALIZE_EXECUTION,
        LIST_REPLAY_KEYS,
        LIST_REPLAY_OBJECTS,
        MAX_REPLAY_ERRORS,
        PREPARE_RESUME,
        PROGRESS_QUERY,
        PUBLISH_REPLAY_CHUNK,
        PUBLISH_REPLAY_KEYS,
        RECORD_REPLAY_PUBLISHED,
        REPLAY_KEYS_SIGNAL,
        REPLAY_PUBLISHED_UPDATE,
        RUN_ROUTE,
        SPILL_MESSAGES,
        STOP_GRACEFULLY_SIGNAL,
        WORKFLOW_NAME,
        CarriedState,
        ExecutionInput,
        ExecutionProgress,
        ExecutionSummary,
        FinalizeInput,
        MessageBatch,
        QueueEntry,
        ReplayChunkTask,
        ReplayListing,
        ReplayRecordTask,
        ReplaySpec,
        ResumePlan,
        ResumeTask,
        RouteResult,
        RouteTask,
        SpillRef,
        SpillTask,
    )
    from sluice.workflows.scheduler import Scheduler

SPILL_CHUNK = 500
# workflow.patched() ids: behaviour changes that running workflows must not see mid-history.
CANCELLED_WHILE_PUBLISHING = "cancel-while-publishing-is-cancelled"
CONTINUE_AFTER_FAILURE = "continue-after-route-failure"
ROUTE_TIMEOUT_MARGIN = timedelta(seconds=30)
INLINE_CARRY_LIMIT = 200
PUBLISH_AHEAD = 2  # replay chunks being published at once
# A replay's chunks double in size (in manifest pages) up to this many pages, so its route starts
# on the first page while few activities publish the rest; a huge replay gets bigger chunks still,
# at most MAX_PUBLISH_CHUNKS of them.
PUBLISH_CHUNK_PAGES = 32
MAX_PUBLISH_CHUNKS = 500


@workflow.defn(name=WORKFLOW_NAME)
class ExecutionWorkflow:
    @workflow.init
    def __init__(self, inp: ExecutionInput) -> None:
        self._inp = inp
        state = inp.state
        self._scheduler = Scheduler(
            inp.execution_id,
            inp.pipeline.routes,
            max_in_flight=inp.max_in_flight,
            carried=state,
            max_messages=inp.preview_messages,
        )
        self._failure: str | None = None
        if state is not None:
            self._started_at = state.started_at
            self._runs = state.runs + 1
            self._activities_total = state.activities_total
            self._replay_listing = state.replay_listing
            self._failure = state.failure
        else:
            self._started_at = workflow.now()
            self._runs = 1
            self._activities_total = 0
            self._replay_listing: ReplayListing | None = None
        self._activities_this_run = 0
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._task_seq = 0
        self._changed = False
        self._draining = False
        self._graceful = False
        self._publishing = False
        # A streamed replay's keys queued so far (None: not publishing a streamed replay).
        self._announced: int | None = None
        # Whether work goes on after a route failure (None: not decided yet, see _continuing()).
        self._continue: bool | None = True if state is not None and state.failure is not None else None
        self._status = "running"

    # -- queries and updates ------------------------------------------------------------------
    @workflow.query(name=PROGRESS_QUERY)
    def progress(self) -> ExecutionProgress:
        return ExecutionProgress(
            execution_id=self._inp.execution_id,
            status=self._status,
            started_at=self._started_at,
            runs=self._runs,
            activities=self._activities_total,
            routes=list(self._scheduler.progress.values()),
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

    @workflow.signal(name=REPLAY_KEYS_SIGNAL)
    def replay_keys_published(self, ref: SpillRef) -> None:
        """A streamed replay's publishing activity announces the full pages it has written (its
        result announces the rest): the route starts on them while the listing goes on."""
        if self._announced is not None and ref.total > self._announced:
            self._queue_published(ref)

    @workflow.signal(name=STOP_GRACEFULLY_SIGNAL)
    def stop_gracefully(self) -> None:
        """Sent before a cancel request: batches in flight finish (their outputs are stored),
        nothing new starts, and the execution ends `cancelled`."""
        self._graceful = True
        self._changed = True

    # -- main loop ----------------------------------------------------------------------------
    @workflow.run
    async def run(self, inp: ExecutionInput) -> ExecutionSummary:
        scheduler = self._scheduler
        try:
            if inp.state is None:
                if inp.init_message is not None and inp.init_route:
                    scheduler.enqueue(inp.init_route, QueueEntry(messages=[inp.init_message]))
                if inp.replay is not None:
                    if inp.replay.streamed:
                        self._start_publishing(self._publish_streamed)
                    elif inp.replay.derived:
                        await self._publish_replay(PUBLISH_REPLAY_KEYS)
                    elif inp.replay.chunk_keys:
                        self._start_publishing(self._publish_in_chunks)
                    else:
                        await self._publish_replay(LIST_REPLAY_OBJECTS)
                if inp.resume is not None:
                    await self._prepare_resume()
            await self._pump()
        except asyncio.CancelledError:
            # A graceful stop signalled before the cancel request has run by now: the SDK defers
            # delivering cancellation to the next turn of the loop, after signal handlers.
            if self._graceful:
                await workflow.wait_condition(lambda: not self._tasks)
            else:
                await self._stop_all()
            await self._end_cancelled()
            raise
        if self._graceful:
            await self._end_cancelled()
            raise asyncio.CancelledError  # stopped by signal alone (its cancel request never came)
        if self._draining and scheduler.has_work() and (self._failure is None or self._continuing()):
            await self._spill_inline_queues()
            workflow.continue_as_new(
                inp.model_copy(
                    update={
                        "init_message": None,
                        "init_route": None,
                        "replay": None,
                        "state": CarriedState(
                            started_at=self._started_at,
                            routes=list(scheduler.progress.values()),
                            queues=scheduler.carried_queues(),
                            collect_pending=scheduler.collect_pending,
                            singles=scheduler.carried_singles(),
                            runs=self._runs,
                            activities_total=self._activities_total,
                            replay_listing=self._replay_listing,
                            failure=self._failure,
                        ),
                    }
                )
            )
        if self._failure is not None:
            self._status = "failed"
            scheduler.settle("failed", workflow.now())
            await self._finalize("failed", self._failure)
            raise ApplicationError(self._failure, type="ExecutionFailed", non_retryable=True)
        self._status = "completed"
        scheduler.settle("completed", workflow.now())
        await self._finalize("completed", None)
        routes = list(scheduler.progress.values())
        return ExecutionSummary(
            execution_id=inp.execution_id,
            status="completed",
            messages_processed=sum(p.messages_processed for p in routes),
            objects_written=sum(p.objects_written for p in routes),
            routes=routes,
        )

    async def _end_cancelled(self) -> None:
        self._status = "cancelled"
        self._scheduler.settle("cancelled", workflow.now())
        how = "gracefully: batches in flight finished, nothing new started" if self._graceful else ""
        await self._finalize("cancelled", f"cancelled by request{' ' + how if how else ''}")

    def _continuing(self) -> bool:
        """Work goes on after a route failure (`on_failure: continue`, the default): decided once,
        at the first failure, so histories recorded before this behaviour replay unchanged."""
        if self._continue is None:
            self._continue = self._inp.pipeline.on_failure == "continue" and workflow.patched(
                CONTINUE_AFTER_FAILURE
            )
        return self._continue

    async def _pump(self) -> None:
        scheduler = self._scheduler
        while True:
            if not self._draining and (
                self._activities_this_run >= self._inp.activities_per_run
                or workflow.info().is_continue_as_new_suggested()
            ):
                self._draining = True
            stopped = self._failure is not None and not self._continuing()
            if not stopped and not self._draining and not self._graceful:
                for name, batch in scheduler.next_batches(workflow.now()):
                    self._start(name, batch)
            if (
                scheduler.in_flight == 0
                and not self._publishing
                and (stopped or self._draining or self._graceful or not scheduler.has_work())
            ):
                return
            self._changed = False
            await workflow.wait_condition(lambda: self._changed)

    def _start(self, name: str, batch: MessageBatch) -> None:
        self._activities_total += 1
        self._activities_this_run += 1
        self._task_seq += 1
        seq = self._task_seq
        self._tasks[seq] = asyncio.create_task(self._run_batch(seq, name, batch))

    async def _run_batch(self, seq: int, name: str, batch: MessageBatch) -> None:
        scheduler = self._scheduler
        route = scheduler.routes[name]
        task = RouteTask(
            execution_id=self._inp.execution_id,
            route=route,
            pipeline=self._inp.pipeline.name,
            params=self._inp.pipeline.params,
            config_hash=self._inp.config_hash,
            batch=batch,
            spill_page_sizes={t: scheduler.page_size(t) for t in route.next if t in scheduler.routes},
            read_executions=self._inp.read_executions,
            clustered_ids=True,
        )
        try:
            result: RouteResult = await workflow.execute_activity(
                RUN_ROUTE,
                task,
                result_type=RouteResult,
                task_queue=route.task_queue,
                # The activity enforces the route's timeout itself (a handler failure); this bound only
                # catches a worker whose event loop is stuck.
                start_to_close_timeout=parse_duration(route.timeout) + ROUTE_TIMEOUT_MARGIN,
                heartbeat_timeout=self._heartbeat_timeout(route),
                retry_policy=RetryPolicy(
                    initial_interval=parse_duration(route.retry.backoff),
                    backoff_coefficient=route.retry.backoff_coefficient,
                    maximum_interval=max(
                        parse_duration(route.retry.max_backoff), parse_duration(route.retry.backoff)
                    ),
                    # The handler's own budget is enforced by the activity; workers lost on the way
                    # spend the worker-loss budget on top.
                    maximum_attempts=route.retry.max_attempts + self._inp.worker_loss_budget,
                    non_retryable_error_types=NON_RETRYABLE_ERROR_TYPES,
                ),
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                summary=f"{name}: {batch.size} message(s)",
            )
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                scheduler.batch_cancelled(name)
            else:
                error = _describe(err)
                continuing = self._continuing()
                split = scheduler.batch_failed(
                    name, error, *_spent_on_failure(err, route), batch=batch, isolate=continuing
                )
                if not split and self._failure is None:
                    self._failure = f"route {name!r} failed: {error}"
                    if not continuing:
                        self._cancel_others(seq)
        except BaseException:
            scheduler.batch_cancelled(name)
            raise
        else:
            scheduler.batch_succeeded(name, result, workflow.now())
        finally:
            self._tasks.pop(seq, None)
            self._changed = True

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

    # -- phases that call activities ----------------------------------------------------------
    def _publishing_spec(self) -> ReplaySpec:
        replay = self._inp.replay
        assert replay is not None
        return replay.model_copy(update={"page_size": self._scheduler.page_size(replay.to_route)})

    def _publishing_options(self) -> dict[str, Any]:
        return {
            "start_to_close_timeout": timedelta(minutes=30),
            "heartbeat_timeout": timedelta(seconds=max(self._inp.heartbeat_timeout_seconds, 10)),
            "retry_policy": RetryPolicy(maximum_attempts=5, maximum_interval=timedelta(seconds=10)),
        }

    async def _publish_replay(self, activity: str) -> None:
        """Publish the replay in one activity before the route starts: `PUBLISH_REPLAY_KEYS` (its
        batches derive the messages) or, for replays started before that, `LIST_REPLAY_OBJECTS`."""
        spec = self._publishing_spec()
        try:
            listing: ReplayListing = await workflow.execute_activity(
                activity,
                spec,
                result_type=ReplayListing,
                summary=f"publish {spec.from_stage} -> {spec.to_route}",
                **self._publishing_options(),
            )
        except ActivityError as err:
            if isinstance(err.cause, CancelledError) and workflow.patched(CANCELLED_WHILE_PUBLISHING):
                raise asyncio.CancelledError from err  # cancelled by request: the run ends `cancelled`
            self._failure = f"publishing the replay failed: {_describe(err)}"
            return
        if listing.spill is not None and listing.spill.total:
            self._scheduler.enqueue(spec.to_route, QueueEntry(spill=listing.spill))
        self._replay_listing = listing.model_copy(update={"spill": None})

    def _start_publishing(self, publish: Callable[[int], Awaitable[None]]) -> None:
        """Publish the replay beside the pump, so the route handles what is published while the
        rest still is (the pump waits for publishing to end)."""
        self._publishing = True
        self._task_seq += 1
        seq = self._task_seq
        self._tasks[seq] = asyncio.create_task(publish(seq))

    async def _publish_streamed(self, seq: int) -> None:
        """One activity lists and publishes the keys, announcing its full pages as they land
        (`replay_keys_published`); its result covers the rest. A graceful stop, or a failure that
        stops the execution, cancels it."""
        spec = self._publishing_spec()
        self._announced = 0
        handle = workflow.start_activity(
            PUBLISH_REPLAY_KEYS,
            spec,
            result_type=ReplayListing,
            summary=f"publish {spec.from_stage} -> {spec.to_route}",
            **self._publishing_options(),
        )
        try:
            await workflow.wait_condition(lambda: handle.done() or self._stop_publishing())
            if not handle.done():
                handle.cancel()
            listing = await handle
            if listing.spill is not None and listing.spill.total > (self._announced or 0):
                self._queue_published(listing.spill)
            self._replay_listing = listing.model_copy(update={"spill": None})
        except ActivityError as err:
            if not isinstance(err.cause, CancelledError) and self._failure is None:
                self._failure = f"publishing the replay failed: {_describe(err)}"
        finally:
            if not handle.done():
                handle.cancel()
            self._announced = None  # a late announcement queues nothing twice
            self._publishing = False
            self._tasks.pop(seq, None)
            self._changed = True

    def _queue_published(self, ref: SpillRef) -> None:
        """Queue a streamed replay's keys from the last one queued up to `ref.total`."""
        assert self._announced is not None and self._inp.replay is not None
        entry = QueueEntry(spill=ref.model_copy(update={"offset": self._announced}))
        self._scheduler.enqueue(self._inp.replay.to_route, entry)
        self._announced = ref.total
        self._changed = True

    async def _publish_in_chunks(self, seq: int) -> None:
        """Replays started before streamed publishing with `chunk_keys`: list the keys, then
        publish them a chunk of manifest pages at a time."""
        replay = self._inp.replay
        assert replay is not None
        spec = self._publishing_spec()
        chunk_spec = spec.model_copy(update={"keys": None})  # chunks read the listed keys instead
        options = self._publishing_options()
        total = ReplayListing(objects_found=0, objects_published=0)
        in_flight: deque[workflow.ActivityHandle[ReplayListing]] = deque()

        def take(chunk: ReplayListing) -> None:
            total.objects_found += chunk.objects_found
            total.objects_published += chunk.objects_published
            total.objects_failed += chunk.objects_failed
            total.errors.extend(chunk.errors[: MAX_REPLAY_ERRORS - len(total.errors)])
            if chunk.spill is not None and chunk.spill.total:
                self._scheduler.enqueue(replay.to_route, QueueEntry(spill=chunk.spill))
                self._changed = True

        try:
            manifest: SpillRef = await workflow.execute_activity(
                LIST_REPLAY_KEYS,
                spec,
                result_type=SpillRef,
                summary=f"list {replay.from_stage} for {replay.to_route}",
                **options,
            )
            pages = manifest.page_count
            largest = max(PUBLISH_CHUNK_PAGES, -(-pages // MAX_PUBLISH_CHUNKS))
            per = next_page = 0
            while True:
                while next_page < pages and len(in_flight) < PUBLISH_AHEAD and not self._stop_publishing():
                    per = min(max(per * 2, 1), largest)
                    in_flight.append(
                        workflow.start_activity(
                            PUBLISH_REPLAY_CHUNK,
                            ReplayChunkTask(
                                spec=chunk_spec, manifest=manifest, first_page=next_page, pages=per
                            ),
                            result_type=ReplayListing,
                            summary=f"publish keys {next_page * manifest.page_size}+ -> {replay.to_route}",
                            **options,
                        )
                    )
                    next_page += per
                if not in_flight:
                    break
                take(await in_flight[0])
                in_flight.popleft()
            if next_page < pages:
                return  # stopped (cancelled gracefully, or a failure that stops the execution)
            await workflow.execute_activity(
                RECORD_REPLAY_PUBLISHED,
                ReplayRecordTask(spec=chunk_spec, listing=total),
                summary=f"record {total.objects_published} published",
                **options,
            )
            self._replay_listing = total
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                return  # cancelled with the execution: its cancellation decides how it ends
            if self._failure is None:
                self._failure = f"publishing the replay failed: {_describe(err)}"
            for handle in in_flight:  # chunks published meanwhile are handled like the others
                try:
                    take(await handle)
                except ActivityError:
                    pass
        finally:
            for handle in in_flight:
                handle.cancel()
            self._publishing = False
            self._tasks.pop(seq, None)
            self._changed = True

    def _stop_publishing(self) -> bool:
        return self._graceful or (self._failure is not None and not self._continuing())

    async def _prepare_resume(self) -> None:
        resume = self._inp.resume
        assert resume is not None
        scheduler = self._scheduler
        try:
            plan: ResumePlan = await workflow.execute_activity(
                PREPARE_RESUME,
                ResumeTask(
                    spec=resume,
                    execution_id=self._inp.execution_id,
                    routes=list(scheduler.routes),
                    collect_routes=[n for n, r in scheduler.routes.items() if r.collect],
                    init_route=self._inp.pipeline.init_message.route
                    if self._inp.pipeline.init_message
                    else None,
                    page_sizes={n: scheduler.page_size(n) for n in scheduler.routes},
                ),
                result_type=ResumePlan,
                start_to_close_timeout=timedelta(minutes=60),
                heartbeat_timeout=timedelta(seconds=max(self._inp.heartbeat_timeout_seconds, 10)),
                retry_policy=RetryPolicy(
                    maximum_attempts=5,
                    maximum_interval=timedelta(seconds=10),
                    non_retryable_error_types=["ResumeSourceIncomplete"],
                ),
                summary=f"resume {resume.source_execution_id}",
            )
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                raise asyncio.CancelledError from err
            self._failure = f"resume failed: {_describe(err)}"
            return
        for name, ref in plan.queues.items():
            scheduler.enqueue(name, QueueEntry(spill=ref))
        for name, count in plan.collect.items():
            scheduler.expect_collect(name, count)

    async def _spill_inline_queues(self) -> None:
        """Before continuing as new, move big inline queues to storage so the new run's input stays small."""
        scheduler = self._scheduler
        for name in list(scheduler.queues):
            inline = scheduler.inline_messages(name)
            if len(inline) <= INLINE_CARRY_LIMIT:
                continue
            spilled: list[SpillRef] = []
            for i in range(0, len(inline), SPILL_CHUNK):
                spilled.append(
                    await workflow.execute_activity(
                        SPILL_MESSAGES,
                        SpillTask(
                            execution_id=self._inp.execution_id,
                            route=name,
                            messages=inline[i : i + SPILL_CHUNK],
                            page_size=scheduler.page_size(name),
                        ),
                        result_type=SpillRef,
                        start_to_close_timeout=timedelta(minutes=5),
                        retry_policy=RetryPolicy(maximum_attempts=10),
                    )
                )
            scheduler.replace_inline(name, spilled)

    async def _finalize(self, status: str, error: str | None) -> None:
        final = FinalizeInput(
            execution_id=self._inp.execution_id,
            status=status,
            error=error,
            completed_at=workflow.now(),
            started_at=self._started_at,
            routes=list(self._scheduler.progress.values()),
        )
        options: dict[str, Any] = {
            "start_to_close_timeout": timedelta(seconds=60),
            "retry_policy": RetryPolicy(maximum_interval=timedelta(seconds=30), maximum_attempts=0),
            "summary": f"record {status}",
        }
        if self._inp.finalize_locally:
            # A local activity: the worker that runs the workflow writes the record in the same
            # workflow task (no activity task round trip through the server for one small write).
            await workflow.execute_local_activity(FINALIZE_EXECUTION, final, **options)
        else:
            await workflow.execute_activity(FINALIZE_EXECUTION, final, **options)


def _spent_on_failure(err: ActivityError, route: RouteConfig) -> tuple[int, int]:
    """(handler retries, worker losses) of a batch that failed for good."""
    cause = err.cause
    details = cause.details if isinstance(cause, ApplicationError) else ()
    if details and isinstance(details[0], dict) and "handler_failures" in details[0]:
        return max(int(details[0]["handler_failures"]) - 1, 0), int(details[0].get("worker_losses", 0))
    if err.retry_state == RetryState.MAXIMUM_ATTEMPTS_REACHED:
        return route.retry.max_attempts - 1, 0
    return 0, 0


def _describe(err: ActivityError) -> str:
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return f"{cause.type or 'Error'}: {cause.message}"
    if cause is not None:
        return f"{type(cause).__name__}: {cause}"
    return str(err)
