"""Activities of runs that workflows start as children (backfill dates, scheduled runs): write
the run's record and hand its start to the workflow; record a backfill's end."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from sluice.activities.deps import ActivityDeps
from sluice.db.models import BackfillRecord, BackfillRunRecord, ExecutionRecord
from sluice.errors import SluiceError
from sluice.services.backfills import BackfillService
from sluice.services.configs import ConfigService
from sluice.services.executions import ExecutionService
from sluice.services.gateway import TemporalGateway
from sluice.services.handler_check import HandlerChecker
from sluice.workflow_io import (
    FINISH_BACKFILL,
    PREPARE_BACKFILL_RUN,
    PREPARE_SCHEDULED_RUN,
    BackfillRunTask,
    FinishBackfill,
    PreparedRun,
    ScheduledRunTask,
)

INVALID_RUN = "BackfillRunInvalid"
INVALID_SCHEDULED_RUN = "ScheduledRunInvalid"


class ChildRunActivities:
    def __init__(self, deps: ActivityDeps):
        self.deps = deps

    def _services(self) -> tuple[ExecutionService, BackfillService]:
        settings, sessions = self.deps.settings, self.deps.sessions
        gateway = TemporalGateway(settings, activity.client())
        configs = ConfigService(sessions, HandlerChecker(gateway, settings), self.deps.transactions)
        return ExecutionService(
            sessions, gateway, settings, configs, self.deps.transactions
        ), BackfillService(sessions, gateway, settings, configs)

    @activity.defn(name=PREPARE_BACKFILL_RUN)
    async def prepare_backfill_run(self, task: BackfillRunTask) -> PreparedRun:
        """Idempotent: a retry finds the record it wrote and plans the same start."""
        executions, backfills = self._services()
        async with self.deps.sessions() as session:
            backfill = await session.get(BackfillRecord, task.backfill_id)
            run = await session.get(BackfillRunRecord, (task.backfill_id, task.date))
            existing = await session.get(ExecutionRecord, task.execution_id)
        if backfill is None or run is None:
            raise ApplicationError(f"backfill {task.backfill_id} has no date {task.date}", type=INVALID_RUN)
        if existing is None and backfill.only_missing:
            done = (await backfills.successful_dates(backfill.config_id, [task.date])).get(task.date)
            if done is not None:
                await self._mark(run, "skipped", f"run {done} already succeeded for {task.date}")
                return PreparedRun(skipped_by=done)
        try:
            launch = await executions.prepare(
                backfill.config_id,
                execution_id=task.execution_id,
                config_version=backfill.config_version,
                params={"date": task.date},
                trigger=f"backfill:{task.backfill_id}",
                triggered_by=backfill.created_by,
            )
        except SluiceError as exc:
            await self._mark(run, "failed", f"cannot start: {exc.detail}")
            raise ApplicationError(exc.detail, type=INVALID_RUN, non_retryable=True) from None
        await self._mark(run, "started", None)
        return PreparedRun(launch=launch)

    async def _mark(self, run: BackfillRunRecord, state: str, note: str | None) -> None:
        async with self.deps.sessions() as session:
            fresh = await session.get(BackfillRunRecord, (run.backfill_id, run.run_date))
            if fresh is not None:
                fresh.state, fresh.note = state, note
                session.add(fresh)
                await session.commit()

    @activity.defn(name=FINISH_BACKFILL)
    async def finish_backfill(self, data: FinishBackfill) -> None:
        async with self.deps.sessions() as session:
            record = await session.get(BackfillRecord, data.backfill_id)
            if record is None:
                return
            record.status, record.error, record.completed_at = data.status, data.error, data.completed_at
            session.add(record)
            await session.commit()

    @activity.defn(name=PREPARE_SCHEDULED_RUN)
    async def prepare_scheduled_run(self, task: ScheduledRunTask) -> PreparedRun:
        executions, _ = self._services()
        try:
            launch = await executions.prepare(
                task.config_id, execution_id=task.execution_id, trigger=task.trigger, triggered_by="schedule"
            )
        except SluiceError as exc:
            raise ApplicationError(exc.detail, type=INVALID_SCHEDULED_RUN, non_retryable=True) from None
        return PreparedRun(launch=launch)
