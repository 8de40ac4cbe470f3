"""ScheduledRunWorkflow: what a config's Temporal Schedule starts each time it fires.

An activity writes the run's record (the config's latest version, trigger `schedule:<cron>`),
then the run is an ExecutionWorkflow child. The schedule's overlap policy applies to this
workflow, which lasts as long as its run; `cancel_other` cancels the run through it.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from sluice.ids import uuid7
    from sluice.workflow_io import (
        PREPARE_SCHEDULED_RUN,
        SCHEDULED_RUN_WORKFLOW,
        WORKFLOW_NAME,
        ExecutionSummary,
        PreparedRun,
        ScheduledRunInput,
        ScheduledRunTask,
    )

INVALID_RUN = "ScheduledRunInvalid"


@workflow.defn(name=SCHEDULED_RUN_WORKFLOW)
class ScheduledRunWorkflow:
    @workflow.run
    async def run(self, inp: ScheduledRunInput) -> str:
        execution_id = str(uuid7(int(workflow.now().timestamp() * 1000), workflow.random().getrandbits(80)))
        prepared: PreparedRun = await workflow.execute_activity(
            PREPARE_SCHEDULED_RUN,
            ScheduledRunTask(config_id=inp.config_id, execution_id=execution_id, trigger=inp.trigger),
            result_type=PreparedRun,
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=RetryPolicy(
                maximum_attempts=10,
                maximum_interval=timedelta(seconds=10),
                non_retryable_error_types=[INVALID_RUN],
            ),
            summary="prepare the run",
        )
        launch = prepared.launch
        assert launch is not None
        await workflow.execute_child_workflow(
            WORKFLOW_NAME,
            launch.input,
            **launch.options(f"{launch.summary} ({inp.trigger})"),
            parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
            result_type=ExecutionSummary,
        )
        return execution_id
