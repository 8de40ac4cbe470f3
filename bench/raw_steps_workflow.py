"""The raw-Temporal baseline of compare_peers.py: one workflow running 10 no-op activities in a row.

The 10-step counterpart of bench/raw_workflow.py, with the same activity options (a Sluice route's
defaults: start_to_close 10m, heartbeat 10s, 3 attempts from 1s backoff). Each step is
`bench.raw_noop`, which passes its payload on. No I/O and no imports beyond temporalio, so the
workflow sandbox can load it as is.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

RAW_STEPS_WORKFLOW = "BenchRawSteps"
STEP_COUNT = 10
STEP_ACTIVITY = "bench.raw_noop"  # bench.handlers.RAW_NOOP


@workflow.defn(name=RAW_STEPS_WORKFLOW)
class RawStepsWorkflow:
    @workflow.run
    async def run(self, payload: dict[str, Any]) -> dict[str, Any]:
        for _ in range(STEP_COUNT):
            payload = await workflow.execute_activity(
                STEP_ACTIVITY,
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
