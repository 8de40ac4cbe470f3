"""The raw-Temporal baselines: one workflow running no-op activities one after the other.

`BenchRawPipeline` (bench_executions.py) runs 3: `bench.raw_first`, which records its start, then
`bench.raw_noop` twice. `BenchRawSteps` (compare_peers.py) runs 10 `bench.raw_noop`. No I/O and no
imports beyond temporalio, so the workflow sandbox can load them as they are. Timeouts and retries
mirror what Sluice gives a route by default: start_to_close 10m (route `timeout`), heartbeat 10s
(SLUICE_HEARTBEAT_TIMEOUT), 3 attempts from 1s backoff (route `retry`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

RAW_WORKFLOW = "BenchRawPipeline"
STEPS = ("bench.raw_first", "bench.raw_noop", "bench.raw_noop")
RAW_STEPS_WORKFLOW = "BenchRawSteps"
TEN_STEPS = ("bench.raw_noop",) * 10  # bench.handlers.RAW_NOOP


async def run_steps(steps: Sequence[str], payload: dict[str, Any]) -> dict[str, Any]:
    for step in steps:
        payload = await workflow.execute_activity(
            step,
            payload,
            result_type=dict,
            start_to_close_timeout=timedelta(minutes=10),
            heartbeat_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=1),
                backoff_coefficient=2.0,
                maximum_interval=timedelta(minutes=1),
                maximum_attempts=3,
            ),
        )
    return payload


@workflow.defn(name=RAW_WORKFLOW)
class RawPipelineWorkflow:
    @workflow.run
    async def run(self, payload: dict[str, Any]) -> dict[str, Any]:
        return await run_steps(STEPS, payload)


@workflow.defn(name=RAW_STEPS_WORKFLOW)
class RawStepsWorkflow:
    @workflow.run
    async def run(self, payload: dict[str, Any]) -> dict[str, Any]:
        return await run_steps(TEN_STEPS, payload)
