"""HandlerCheckWorkflow: ask a worker on each task queue to import and check handler strings.

The config validator's second half (the API checks syntax and policy itself): the report then
reflects the code the workers actually have. A queue that no worker polls times out as a warning
(W301), not an error: the config may be for workers that start later.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from sluice.workflow_io import (
        CHECK_HANDLERS,
        HANDLER_CHECK_WORKFLOW,
        HandlerCheck,
        HandlerCheckInput,
        HandlerCheckResult,
    )


@workflow.defn(name=HANDLER_CHECK_WORKFLOW)
class HandlerCheckWorkflow:
    @workflow.run
    async def run(self, inp: HandlerCheckInput) -> HandlerCheckResult:
        per_queue = await asyncio.gather(
            *(self._check(q, h, inp.timeout_seconds) for q, h in inp.queues.items())
        )
        return HandlerCheckResult(checks=[check for checks in per_queue for check in checks])

    async def _check(self, queue: str, handlers: list[str], wait: float) -> list[HandlerCheck]:
        try:
            return await workflow.execute_activity(
                CHECK_HANDLERS,
                handlers,
                result_type=list[HandlerCheck],
                task_queue=queue,
                schedule_to_start_timeout=timedelta(seconds=wait),
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=RetryPolicy(maximum_attempts=1),
                summary=f"check {len(handlers)} handler(s)",
            )
        except ActivityError:
            return [
                HandlerCheck(
                    handler=spec,
                    queue=queue,
                    code="W301",
                    message=f"handler {spec!r} was not checked: no worker polling task queue {queue!r} "
                    f"answered within {wait:g}s",
                    suggestion=f"start a worker that polls {queue!r} (SLUICE_TASK_QUEUE / SLUICE_WORKER_TASK_QUEUES)",
                )
                for spec in handlers
            ]
