"""The raw-Temporal baseline: one workflow running 3 activities one after the other.

No I/O and no imports beyond temporalio, so the workflow sandbox can load it as is. Timeouts and
retries mirror what Sluice gives a route by default: start_to_close 10m (route `timeout`),
heartbeat 10s (SLUICE_HEARTBEAT_TIMEOUT), 3 attempts from 1s backoff (route `retry`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

RAW_WORKFLOW = "BenchRawPipeline"
STEPS = ("bench.raw_first", "bench.raw_noop", "bench.raw_noop")


@workflow.defn(name=RAW_WORKFLOW)
class RawPipelineWorkflow:
    @workflow.run
    async def run(self, payload: dict[str, Any]) -> dict[str, Any]:
        for step in STEPS:
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
