"""BackfillWorkflow: one run per date of a range, in date order, at most `max_parallel` at once.

Each run is an ExecutionWorkflow child (its record written by an activity first), so the backfill
survives API and worker restarts like any workflow, shows its runs as children in the Temporal UI,
and cancelling it cancels the runs in flight and starts no more.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, CancelledError, ChildWorkflowError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from sluice.workflow_io import (
        BACKFILL_PROGRESS_QUERY,
        BACKFILL_WORKFLOW,
        FINISH_BACKFILL,
        PREPARE_BACKFILL_RUN,
        WORKFLOW_NAME,
        BackfillDateStatus,
        BackfillInput,
        BackfillItem,
        BackfillProgress,
        BackfillRunTask,
        ExecutionSummary,
        FinishBackfill,
        PreparedRun,
    )

INVALID_RUN = "BackfillRunInvalid"


@workflow.defn(name=BACKFILL_WORKFLOW)
class BackfillWorkflow:
    @workflow.init
    def __init__(self, inp: BackfillInput) -> None:
        self._inp = inp
        self._dates: dict[str, BackfillDateStatus] = {item.date: "pending" for item in inp.runs}
        self._status = "running"
        self._in_flight = 0

    @workflow.query(name=BACKFILL_PROGRESS_QUERY)
    def progress(self) -> BackfillProgress:
        return BackfillProgress(
            backfill_id=self._inp.backfill_id,
            status=self._status,  # type: ignore[arg-type]
            dates=dict(self._dates),
        )

    @workflow.run
    async def run(self, inp: BackfillInput) -> BackfillProgress:
        tasks: list[asyncio.Task[None]] = []
        try:
            for item in inp.runs:
                await workflow.wait_condition(lambda: self._in_flight < max(inp.max_parallel, 1))
                self._in_flight += 1
                tasks.append(asyncio.create_task(self._one(item)))
            await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for date, state in self._dates.items():
                if state in ("pending", "running"):
                    self._dates[date] = "cancelled"
            await self._finish("cancelled", "cancelled by request")
            raise
        failed = sorted(d for d, s in self._dates.items() if s == "failed")
        await self._finish(
            "failed" if failed else "completed",
            f"{len(failed)} date(s) failed: {', '.join(failed[:10])}" if failed else None,
        )
        return self.progress()

    async def _one(self, item: BackfillItem) -> None:
        try:
            prepared: PreparedRun = await workflow.execute_activity(
                PREPARE_BACKFILL_RUN,
                BackfillRunTask(
                    backfill_id=self._inp.backfill_id, date=item.date, execution_id=item.execution_id
                ),
                result_type=PreparedRun,
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=RetryPolicy(
                    maximum_attempts=10,
                    maximum_interval=timedelta(seconds=10),
                    non_retryable_error_types=[INVALID_RUN],
                ),
                summary=f"prepare {item.date}",
            )
            launch = prepared.launch
            if launch is None:
                self._dates[item.date] = "skipped"
                return
            self._dates[item.date] = "running"
            await workflow.execute_child_workflow(
                WORKFLOW_NAME,
                launch.input,
                **launch.options(f"{launch.summary} {item.date}"),
                parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
                result_type=ExecutionSummary,
            )
            self._dates[item.date] = "success"
        except ChildWorkflowError as err:
            self._dates[item.date] = "cancelled" if isinstance(err.cause, CancelledError) else "failed"
        except ActivityError:
            self._dates[item.date] = "failed"
        finally:
            self._in_flight -= 1

    async def _finish(self, status: str, error: str | None) -> None:
        self._status = status
        await workflow.execute_activity(
            FINISH_BACKFILL,
            FinishBackfill(
                backfill_id=self._inp.backfill_id,
                status=status,  # type: ignore[arg-type]
                completed_at=workflow.now(),
                error=error,
            ),
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30), maximum_attempts=0),
            summary=f"record {status}",
        )
