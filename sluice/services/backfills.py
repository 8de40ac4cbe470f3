"""Backfills: one run of a pipeline per date of a range, `params.date` set, started by a
BackfillWorkflow in date order (workflows/backfill.py).

Run ids are reserved here, before any run starts, so the caller gets them all at once; a run's
record exists once the workflow starts it, and until then it reads as `pending`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import WorkflowExecutionStatus
from temporalio.common import WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from sluice.clock import utcnow
from sluice.db.models import BackfillRecord, BackfillRunRecord, ExecutionRecord
from sluice.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError, UnavailableError
from sluice.ids import parse_uuid, uuid7
from sluice.services.configs import ConfigService, require_valid
from sluice.services.gateway import TemporalGateway
from sluice.settings import Settings
from sluice.workflow_io import (
    BACKFILL_WORKFLOW,
    BackfillInput,
    BackfillItem,
    backfill_workflow_id,
)

DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MAX_PARALLEL = 50
_CLOSED = {
    WorkflowExecutionStatus.COMPLETED: "completed",
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.CANCELED: "cancelled",
    WorkflowExecutionStatus.TERMINATED: "interrupted",
    WorkflowExecutionStatus.TIMED_OUT: "interrupted",
}


def parse_date(value: object, name: str) -> date:
    if not isinstance(value, str) or not DATE.match(value):
        raise InvalidArgumentError(f"{name} must be a date as YYYY-MM-DD", error_code="INVALID_DATE")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidArgumentError(
            f"{name} {value!r} is not a calendar date", error_code="INVALID_DATE"
        ) from None


def date_range(start: object, end: object, max_days: int) -> list[str]:
    """Every date from start to end inclusive, as YYYY-MM-DD."""
    first, last = parse_date(start, "start_date"), parse_date(end, "end_date")
    if last < first:
        raise InvalidArgumentError(
            f"end_date {last} is before start_date {first}", error_code="INVALID_DATE_RANGE"
        )
    days = (last - first).days + 1
    if days > max_days:
        raise InvalidArgumentError(
            f"the range has {days} days; a backfill covers at most {max_days} (SLUICE_BACKFILL_MAX_DAYS)",
            error_code="BACKFILL_TOO_LONG",
        )
    return [(first + timedelta(days=i)).isoformat() for i in range(days)]


@dataclass
class BackfillView:
    record: BackfillRecord
    runs: list[BackfillRunRecord]
    executions: dict[str, ExecutionRecord]


class BackfillService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        gateway: TemporalGateway,
        settings: Settings,
        configs: ConfigService,
    ):
        self.sessions = sessions
        self.gateway = gateway
        self.settings = settings
        self.configs = configs

    async def create(
        self,
        config_id: str,
        *,
        start_date: object,
        end_date: object,
        max_parallel: int = 1,
        only_missing: bool = True,
        created_by: str | None = None,
    ) -> tuple[BackfillRecord, list[BackfillRunRecord]]:
        """Reserve a run per date (only those without a successful run when `only_missing`) and
        start the backfill workflow."""
        dates = date_range(start_date, end_date, self.settings.backfill_max_days)
        if not 1 <= max_parallel <= MAX_PARALLEL:
            raise InvalidArgumentError(f"max_parallel must be between 1 and {MAX_PARALLEL}")
        config = await self.configs.get(config_id)
        require_valid(config.yaml)
        if only_missing:
            done = await self.successful_dates(config.id, dates)
            dates = [d for d in dates if d not in done]
        backfill_id = str(uuid7())
        record = BackfillRecord(
            id=backfill_id,
            config_id=config.id,
            config_version=config.version,
            pipeline=config.name,
            start_date=str(start_date),
            end_date=str(end_date),
            max_parallel=max_parallel,
            only_missing=only_missing,
            status="running" if dates else "completed",
            workflow_id=backfill_workflow_id(backfill_id),
            created_by=created_by,
            completed_at=None if dates else utcnow(),
        )
        runs = [
            BackfillRunRecord(backfill_id=backfill_id, run_date=d, execution_id=str(uuid7())) for d in dates
        ]
        async with self.sessions() as session:
            session.add(record)
            session.add_all(runs)
            await session.commit()
            await session.refresh(record)
        if not runs:
            return record, []
        try:
            client = await self.gateway.client()
            await client.start_workflow(
                BACKFILL_WORKFLOW,
                BackfillInput(
                    backfill_id=backfill_id,
                    runs=[BackfillItem(date=r.run_date, execution_id=r.execution_id) for r in runs],
                    max_parallel=max_parallel,
                ),
                id=record.workflow_id,
                task_queue=self.settings.task_queue,
                static_summary=f"backfill {config.name} {start_date}..{end_date}",
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            )
        except Exception as exc:
            async with self.sessions() as session:
                for run in runs:
                    await session.delete(await session.merge(run))
                await session.delete(await session.merge(record))
                await session.commit()
            if isinstance(exc, RPCError):
                self.gateway.forget()
                raise UnavailableError(
                    f"could not start the backfill on Temporal: {exc.message}",
                    error_code="TEMPORAL_UNAVAILABLE",
                ) from exc
            raise
        return record, runs

    async def successful_dates(self, config_id: str, dates: Sequence[str]) -> dict[str, str]:
        """date -> id of a completed run of the config with that `params.date`."""
        if not dates:
            return {}
        run_date = ExecutionRecord.__table__.c.params["date"].as_string()  # type: ignore[attr-defined]
        async with self.sessions() as session:
            rows = await session.exec(
                select(run_date, ExecutionRecord.id).where(
                    ExecutionRecord.config_id == config_id,
                    ExecutionRecord.status == "completed",
                    run_date.in_(list(dates)),
                )
            )
            return {d: i for d, i in rows.all()}

    async def get(self, backfill_id: str) -> BackfillView:
        async with self.sessions() as session:
            record = await session.get(BackfillRecord, backfill_id) if parse_uuid(backfill_id) else None
            if record is None:
                raise NotFoundError(f"backfill {backfill_id} not found", error_code="BACKFILL_NOT_FOUND")
            runs = list(
                (
                    await session.exec(
                        select(BackfillRunRecord)
                        .where(BackfillRunRecord.backfill_id == backfill_id)
                        .order_by(col(BackfillRunRecord.run_date))
                    )
                ).all()
            )
            ids = [r.execution_id for r in runs]
            executions = {
                e.id: e
                for e in (
                    await session.exec(select(ExecutionRecord).where(col(ExecutionRecord.id).in_(ids)))
                ).all()
            }
        if record.status == "running":
            record = await self._reconcile(record)
        return BackfillView(record, runs, executions)

    async def _reconcile(self, record: BackfillRecord) -> BackfillRecord:
        """A backfill workflow terminated outside Sluice reads as `interrupted`."""
        try:
            client = await self.gateway.client()
            desc = await client.get_workflow_handle(record.workflow_id).describe()
            status = _CLOSED.get(desc.status) if desc.status else None  # type: ignore[arg-type]
        except RPCError as exc:
            status = "interrupted" if exc.status == RPCStatusCode.NOT_FOUND else None
        except Exception:
            status = None
        if status != "interrupted":
            return record  # running, or closed and recorded by its own last activity
        async with self.sessions() as session:
            fresh = await session.get(BackfillRecord, record.id)
            if fresh is not None and fresh.status == "running":
                fresh.status, fresh.completed_at = "interrupted", utcnow()
                fresh.error = "backfill workflow ended outside Sluice"
                session.add(fresh)
                await session.commit()
                await session.refresh(fresh)
                return fresh
        return record

    async def cancel(self, backfill_id: str) -> BackfillView:
        """Cancel the runs in flight and start no more."""
        view = await self.get(backfill_id)
        if view.record.status != "running":
            raise FailedPreconditionError(
                f"backfill {backfill_id} is already {view.record.status}",
                error_code="BACKFILL_TERMINAL",
                extra={"status": view.record.status},
            )
        client = await self.gateway.client()
        handle = client.get_workflow_handle(view.record.workflow_id)
        try:
            await handle.cancel(reason="backfill cancelled")
        except RPCError as exc:
            self.gateway.forget()
            raise UnavailableError(f"could not cancel on Temporal: {exc.message}") from exc
        with contextlib.suppress(Exception):  # still stopping: the view says so
            await asyncio.wait_for(handle.result(), self.settings.cancel_wait_seconds)
        return await self.get(backfill_id)

    async def pending_run(self, execution_id: str) -> tuple[BackfillRunRecord, BackfillRecord] | None:
        """A reserved backfill run that has not started yet (it has no execution record)."""
        async with self.sessions() as session:
            run = (
                await session.exec(
                    select(BackfillRunRecord).where(BackfillRunRecord.execution_id == execution_id)
                )
            ).first()
            if run is None:
                return None
            record = await session.get(BackfillRecord, run.backfill_id)
        return (run, record) if record is not None else None
