"""Executions: start a run, read it, cancel it, and keep its record honest.

A record says `running` only while its workflow runs: reads reconcile with Temporal, so a
workflow terminated or timed out outside Sluice shows as `interrupted`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import Session, col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import (
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from sluice.clock import as_utc, utcnow
from sluice.db.engine import SyncTransactions
from sluice.db.events import (
    EXECUTION_CANCEL_REQUESTED,
    EXECUTION_STARTED,
    insert_events,
    lifecycle_row,
)
from sluice.db.models import ExecutionLogRecord, ExecutionRecord, RouteRunRecord
from sluice.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from sluice.ids import derived_id, parse_uuid, uuid7
from sluice.messages import Message, MessageMetadata
from sluice.metrics import EXECUTIONS_STARTED, trigger_label
from sluice.params import check_run_params, substitute
from sluice.pipeline_config import PipelineConfig
from sluice.services.closing import close_execution
from sluice.services.configs import ConfigService, ConfigText, Page, require_valid
from sluice.services.gateway import TemporalGateway
from sluice.settings import Settings
from sluice.temporal import SA_CONFIG_ID, SA_LAYER, SA_NAMESPACE, SA_PIPELINE, SA_TAG
from sluice.workflow_io import (
    PROGRESS_QUERY,
    REPLAY_PUBLISHED_UPDATE,
    STOP_GRACEFULLY_SIGNAL,
    WORKFLOW_NAME,
    ExecutionInput,
    ExecutionLaunch,
    ExecutionProgress,
    ReplayListing,
    ReplaySpec,
    ResumeSpec,
    RouteProgress,
    workflow_id_for,
)

log = logging.getLogger("sluice.executions")

SORTABLE = {
    "created_at": col(ExecutionRecord.created_at),
    "started_at": col(ExecutionRecord.started_at),
    "completed_at": col(ExecutionRecord.completed_at),
    "finished_at": col(ExecutionRecord.completed_at),
    "duration_ms": col(ExecutionRecord.duration_ms),
    "status": col(ExecutionRecord.status),
    "pipeline": col(ExecutionRecord.pipeline),
}


# Only these can be NULL; ordering the others without NULLS LAST lets PostgreSQL walk the index.
NULLABLE_SORTS = frozenset({"completed_at", "finished_at", "duration_ms"})


@dataclass
class ExecutionFilters:
    statuses: list[str] | None = None
    config_id: str | None = None
    pipeline: str | None = None
    namespace: str | None = None
    layer: str | None = None
    tag: str | None = None
    trigger: str | None = None
    parent_execution_id: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    include_dry_runs: bool = False  # dry runs appear in no list (they are removed when done)


TERMINAL = frozenset({"completed", "failed", "cancelled", "interrupted"})
DRY_RUN_TRIGGER = "dry-run"
RESUMABLE = frozenset({"failed", "cancelled", "interrupted"})
MAX_ANCESTRY = 50
_CLOSED = {
    WorkflowExecutionStatus.COMPLETED: ("completed", None),
    WorkflowExecutionStatus.FAILED: ("failed", "workflow failed"),
    WorkflowExecutionStatus.CANCELED: ("cancelled", "cancelled"),
    WorkflowExecutionStatus.TERMINATED: ("interrupted", "workflow was terminated outside Sluice"),
    WorkflowExecutionStatus.TIMED_OUT: ("interrupted", "workflow timed out"),
}
MAX_TAG = 255
STALE_START = timedelta(seconds=30)  # a start still in flight after this has died
INSERT_EXECUTION = insert(ExecutionRecord.__table__)  # type: ignore[arg-type]


def validate_tag(tag: str | None) -> str | None:
    if tag is None:
        return None
    if not tag.strip() or len(tag) > MAX_TAG or "/" in tag or any(ord(c) < 32 for c in tag):
        raise InvalidArgumentError(
            "tag must be 1-255 printable characters without '/'", error_code="INVALID_TAG"
        )
    if parse_uuid(tag) is not None:
        raise InvalidArgumentError(
            "tag must not look like a UUID (ids and tags share a URL)", error_code="INVALID_TAG"
        )
    return tag


def first_message(
    pipeline: PipelineConfig,
    execution_id: str,
    params: dict[str, Any],
    overrides: dict[str, Any] | None = None,
) -> Message | None:
    """The init message of a run: the config's payload, the caller's overrides, `${param.NAME}`
    filled from the config's params overridden by the run's (400 UNKNOWN_PARAM if missing)."""
    if pipeline.init_message is None:
        return None
    return Message(
        payload=substitute(
            {**pipeline.init_message.payload, **(overrides or {})}, {**pipeline.params, **params}
        ),
        metadata=MessageMetadata(execution_id=execution_id, correlation_id=derived_id(execution_id, "init")),
    )


@dataclass(frozen=True)
class NewExecution:
    """What an execution about to start is: `ExecutionService.plan` turns it into its record and
    workflow start, `ExecutionService.start` also launches it."""

    execution_id: str
    config_id: str
    config_version: int
    yaml_text: str
    pipeline: PipelineConfig
    init_message: Message | None
    tag: str | None
    trigger: str
    triggered_by: str | None = None
    parent_execution_id: str | None = None
    replay: ReplaySpec | None = None
    read_executions: list[str] | None = None
    params: dict[str, Any] | None = None
    resume: ResumeSpec | None = None


def new_run(
    config: ConfigText,
    execution_id: str,
    *,
    trigger: str,
    triggered_by: str | None = None,
    params: Any = None,
    tag: str | None = None,
    skip_init_message: bool = False,
    init_payload_overrides: dict[str, Any] | None = None,
) -> NewExecution:
    """A run of a config's version as a caller asks for it: the config is checked first (422
    CONFIG_INVALID), then the run's params (422 INVALID_PARAMS), then its first message is built."""
    pipeline, _ = require_valid(config.yaml)
    params = check_run_params(params)
    return NewExecution(
        execution_id=execution_id,
        config_id=config.id,
        config_version=config.version,
        yaml_text=config.yaml,
        pipeline=pipeline,
        init_message=None
        if skip_init_message
        else first_message(pipeline, execution_id, params, init_payload_overrides),
        tag=tag,
        trigger=trigger,
        triggered_by=triggered_by,
        params=params,
    )


@dataclass
class StartedExecution:
    record: ExecutionRecord
    listing: ReplayListing | None = None  # a replay: what its publishing phase found and published
    publish_error: str | None = None  # a replay whose publishing failed (the execution fails too)


class ExecutionService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        gateway: TemporalGateway,
        settings: Settings,
        configs: ConfigService,
        transactions: SyncTransactions,
    ):
        self.sessions = sessions
        self.gateway = gateway
        self.settings = settings
        self.configs = configs
        self.transactions = transactions

    # -- start -------------------------------------------------------------------------------
    async def run_config(
        self,
        config_id: str,
        *,
        tag: str | None = None,
        skip_init_message: bool = False,
        init_payload_overrides: dict[str, Any] | None = None,
        trigger: str = "manual",
        triggered_by: str | None = None,
        execution_id: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> ExecutionRecord:
        """Start the config's latest version. `execution_id` comes from an Idempotency-Key
        reservation: a retry then finds (or finishes starting) the same execution. `params`
        override the config's params for this run and fill `${param.NAME}` in the init payload."""
        config = await self.configs.current(config_id)
        idempotent = execution_id is not None
        new = new_run(
            config,
            execution_id or str(uuid7()),
            trigger=trigger,
            triggered_by=triggered_by,
            params=params,
            tag=tag,
            skip_init_message=skip_init_message,
            init_payload_overrides=init_payload_overrides,
        )
        started = await self.start(new, idempotent=idempotent)
        return started.record

    async def start(
        self, new: NewExecution, *, idempotent: bool = False, wait_for_publish: bool = True
    ) -> StartedExecution:
        """Record the execution and start its workflow. `idempotent`: a retry (same execution id)
        joins what its first attempt started. `wait_for_publish`: a replay answers once its
        objects are published."""
        new = dataclasses.replace(new, tag=validate_tag(new.tag))
        client = await self.gateway.client()
        existing = await self._get(new.execution_id) if idempotent else None
        if existing is not None and existing.replay and new.replay is not None:
            replay_batch_id = existing.replay["replay_batch_id"]
            new = dataclasses.replace(
                new, replay=new.replay.model_copy(update={"replay_batch_id": replay_batch_id})
            )
        record, launch = self.plan(new)
        record = existing or record
        if existing is None:
            await self.insert(record)
        workflow_input = launch.input
        # An idempotent retry joins the workflow its first attempt started, and never starts a
        # second run of a workflow that already finished.
        conflict = WorkflowIDConflictPolicy.USE_EXISTING if idempotent else WorkflowIDConflictPolicy.FAIL
        options: dict[str, Any] = {
            **launch.options(),
            "id_conflict_policy": conflict,
            "id_reuse_policy": WorkflowIDReusePolicy.REJECT_DUPLICATE,
        }
        started = StartedExecution(record)
        try:
            if new.replay is None or not wait_for_publish:
                await client.start_workflow(WORKFLOW_NAME, workflow_input, **options)
            else:
                # Update-with-start: one call starts the workflow and returns when the replay's
                # objects are published, so the caller gets real counts.
                started.listing = await client.execute_update_with_start_workflow(
                    REPLAY_PUBLISHED_UPDATE,
                    start_workflow_operation=WithStartWorkflowOperation(
                        WORKFLOW_NAME, workflow_input, **options
                    ),
                    result_type=ReplayListing,
                )
        except WorkflowAlreadyStartedError:
            # An idempotent retry after the workflow already finished: answer with what it recorded.
            started.record = await self.find(new.execution_id)
            if new.replay is not None and started.record.replay:
                started.listing = ReplayListing.model_validate(
                    {"objects_found": 0, "objects_published": 0, **started.record.replay}
                )
        except WorkflowUpdateFailedError as exc:
            # Started, but publishing failed: the workflow records the failure itself.
            started.publish_error = str(exc.cause or exc)
            log.warning("replay %s failed while publishing: %s", new.execution_id, started.publish_error)
        except Exception as exc:
            if existing is None:
                await self._discard(new.execution_id)  # never started: the tag stays free
            if isinstance(exc, RPCError):
                self.gateway.forget()
                raise UnavailableError(
                    f"could not start the execution on Temporal: {exc.message}",
                    error_code="TEMPORAL_UNAVAILABLE",
                ) from exc
            raise
        if started.listing is not None and started.record.replay is not None:
            started.record.replay = {**started.record.replay, **started.listing.counts()}
        return started

    def plan(self, new: NewExecution) -> tuple[ExecutionRecord, ExecutionLaunch]:
        """The record and the workflow start of a new execution, without I/O: `start` launches it
        from the API, the backfill workflow as a child."""
        pipeline, replay, resume, params, tag = new.pipeline, new.replay, new.resume, new.params, new.tag
        now = utcnow()  # given, not left to the default factories: pydantic inspects each per call
        record = ExecutionRecord(
            id=new.execution_id,
            config_id=new.config_id,
            config_version=new.config_version,
            config_yaml=new.yaml_text,
            config_hash=pipeline.config_hash(),
            pipeline=pipeline.name,
            namespace=pipeline.namespace,
            layer=pipeline.layer,
            status="running",
            trigger=new.trigger,
            triggered_by=new.triggered_by,
            tag=tag,
            parent_execution_id=new.parent_execution_id,
            replay_source=replay.replay_source if replay else None,
            replay=(
                {
                    "from_execution_id": replay.source_execution_id,
                    "from_stage": replay.from_stage,
                    "from_path": replay.from_path,
                    "to_route": replay.to_route,
                    "replay_batch_id": replay.replay_batch_id,
                    "metadata": replay.metadata,
                }
                if replay
                else None
            ),
            workflow_id=workflow_id_for(new.execution_id),
            task_queue=self.settings.task_queue,
            init_payload=new.init_message.payload if new.init_message else None,
            params=params or None,
            resume=(
                {"from_execution_id": resume.source_execution_id, "config": resume.config} if resume else None
            ),
            created_at=now,
            started_at=now,
        )
        search = {
            SA_PIPELINE.name: pipeline.name,
            SA_CONFIG_ID.name: new.config_id,
            SA_NAMESPACE.name: pipeline.namespace,
            SA_LAYER.name: pipeline.layer,
        }
        if tag:
            search[SA_TAG.name] = tag
        workflow_input = ExecutionInput(
            execution_id=new.execution_id,
            # The run's params override the config's: handlers see them in ctx.params.
            pipeline=pipeline.model_copy(update={"params": {**pipeline.params, **params}})
            if params
            else pipeline,
            config_hash=record.config_hash,
            init_message=new.init_message,
            init_route=pipeline.init_message.route if (new.init_message and pipeline.init_message) else None,
            replay=replay,
            heartbeat_timeout_seconds=self.settings.heartbeat_seconds,
            max_in_flight=self.settings.max_in_flight,
            activities_per_run=self.settings.activities_per_run,
            read_executions=new.read_executions or [],
            worker_loss_budget=self.settings.worker_loss_budget,
            resume=resume,
            finalize_locally=True,
        )
        launch = ExecutionLaunch(
            input=workflow_input,
            workflow_id=record.workflow_id,
            task_queue=self.settings.task_queue,
            search=search,
            summary=f"{pipeline.namespace}.{pipeline.layer}.{pipeline.name}" + (f" [{tag}]" if tag else ""),
        )
        return record, launch

    async def prepare(
        self,
        config_id: str,
        *,
        execution_id: str,
        trigger: str,
        config_version: int | None = None,
        params: dict[str, Any] | None = None,
        triggered_by: str | None = None,
    ) -> ExecutionLaunch:
        """Write a run's record (once: a retry finds it) and say how to start it: for runs a
        workflow starts as its child (backfills, schedules). Latest config version unless given."""
        if config_version is None:
            current = await self.configs.current(config_id)
            yaml_text, config_version = current.yaml, current.version
        else:
            yaml_text = (await self.configs.version(config_id, config_version)).yaml
        pipeline, _ = require_valid(yaml_text)
        record, launch = self.plan(
            NewExecution(
                execution_id=execution_id,
                config_id=config_id,
                config_version=config_version,
                yaml_text=yaml_text,
                pipeline=pipeline,
                init_message=first_message(pipeline, execution_id, params or {}),
                tag=None,
                trigger=trigger,
                triggered_by=triggered_by,
                params=params,
            )
        )
        if await self._get(execution_id) is None:
            await self.insert(record)
        return launch

    async def _get(self, execution_id: str) -> ExecutionRecord | None:
        async with self.sessions() as session:
            return await session.get(ExecutionRecord, execution_id)

    async def insert(self, record: ExecutionRecord) -> None:
        """Store a new execution (and its `execution.started` event); 409 if its tag is taken by a
        live execution. A tag held by a start that never reached Temporal is given back."""
        tag = record.tag
        if tag is not None:
            await self._free_stale_tag(tag)
        now = utcnow()
        record.created_at = record.started_at = now
        started = lifecycle_row(
            record.id,
            EXECUTION_STARTED,
            f"execution started: pipeline {record.pipeline}, trigger {record.trigger}"
            + (f", by {record.triggered_by}" if record.triggered_by else "")
            + (f", tag {tag}" if tag else "")
            + (f", replay of {record.parent_execution_id}" if record.parent_execution_id else ""),
            data={
                "status": "running",
                "pipeline": record.pipeline,
                "trigger": record.trigger,
                "tag": tag,
                "triggered_by": record.triggered_by,
            },
            timestamp=now,
        )

        def write(session: Session) -> None:
            # Plain INSERTs in one synchronous transaction: every run starts here, and the ORM's
            # unit of work over aiosqlite cost more CPU than the rest of the start.
            if tag is not None:
                clash = session.exec(select(ExecutionRecord.id).where(ExecutionRecord.tag == tag)).first()
                if clash:
                    raise AlreadyExistsError(
                        f"tag {tag!r} is already used by execution {clash}", error_code="TAG_EXISTS"
                    )
            # On the connection: the session's ORM-enabled execute costs more than these inserts.
            conn = session.connection()
            conn.execute(INSERT_EXECUTION, [record.model_dump()])
            insert_events(conn, [started])

        try:
            await self.transactions.run(write)
        except IntegrityError:
            raise AlreadyExistsError(f"tag {tag!r} is already used", error_code="TAG_EXISTS") from None
        if record.trigger != DRY_RUN_TRIGGER:
            EXECUTIONS_STARTED.labels(record.pipeline, trigger_label(record.trigger)).inc()

    async def _free_stale_tag(self, tag: str) -> None:
        """Delete the record holding `tag` if its start died before the workflow existed (the API
        was killed mid-request): no workflow in Temporal, no route ever ran, and old enough that no
        start is still in flight."""
        async with self.sessions() as session:
            holder = (await session.exec(select(ExecutionRecord).where(ExecutionRecord.tag == tag))).first()
            if holder is None or holder.status not in ("running", "interrupted"):
                return
            if utcnow() - (as_utc(holder.created_at) or utcnow()) < STALE_START:
                return
            ran = (
                await session.exec(select(RouteRunRecord.id).where(RouteRunRecord.execution_id == holder.id))
            ).first()
        if ran is not None:
            return
        try:
            client = await self.gateway.client()
            await client.get_workflow_handle(holder.workflow_id).describe()
            return  # the workflow exists: the tag is really taken
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                return
        log.warning(
            "tag %r: freeing it from execution %s, whose start never reached Temporal", tag, holder.id
        )
        await self._discard(holder.id)

    async def _discard(self, execution_id: str) -> None:
        async with self.sessions() as session:
            await session.exec(
                delete(ExecutionLogRecord).where(ExecutionLogRecord.execution_id == execution_id)
            )  # type: ignore[call-overload]
            await session.exec(delete(ExecutionRecord).where(ExecutionRecord.id == execution_id))  # type: ignore[call-overload]
            await session.commit()

    # -- read --------------------------------------------------------------------------------
    async def find(self, id_or_tag: str) -> ExecutionRecord:
        async with self.sessions() as session:
            record = None
            if parse_uuid(id_or_tag) is not None:
                record = await session.get(ExecutionRecord, str(parse_uuid(id_or_tag)))
            if record is None:
                record = (
                    await session.exec(select(ExecutionRecord).where(ExecutionRecord.tag == id_or_tag))
                ).first()
        if record is None:
            raise NotFoundError(f"execution {id_or_tag} not found", error_code="EXECUTION_NOT_FOUND")
        return record

    async def get(self, id_or_tag: str) -> ExecutionRecord:
        record = await self.find(id_or_tag)
        if record.status == "running":
            record = await self.reconcile(record)
        return record

    async def reconcile(self, record: ExecutionRecord) -> ExecutionRecord:
        """Bring a `running` record in line with its workflow; leave it alone if Temporal is down."""
        try:
            client = await self.gateway.client()
            desc = await client.get_workflow_handle(record.workflow_id).describe()
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                return record
            return await self._close(record, "interrupted", "workflow not found in Temporal", None)
        except Exception:
            return record
        if desc.status in (None, WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.CONTINUED_AS_NEW):
            return record
        fresh = await self.find(record.id)
        if fresh.status != "running":
            return fresh
        status, error = _CLOSED.get(desc.status, ("interrupted", f"workflow closed as {desc.status}"))
        return await self._close(fresh, status, error, desc.close_time)

    async def _close(
        self, record: ExecutionRecord, status: str, error: str | None, closed_at: datetime | None
    ) -> ExecutionRecord:
        def close(session: Session) -> ExecutionRecord | None:
            now = close_execution(
                session,
                record.id,
                status=status,
                error=error,
                completed_at=closed_at or utcnow(),
                authoritative=False,
            )
            return None if now is None else session.get(ExecutionRecord, record.id)

        closed = await self.transactions.run(close)
        if closed is None:
            return record
        if closed.status == status:
            log.warning("execution %s marked %s: %s", closed.id, status, error)
        return closed

    async def reconcile_running(self, limit: int = 200) -> int:
        """Sweep `running` records (the API runs this periodically)."""
        async with self.sessions() as session:
            rows = (
                await session.exec(
                    select(ExecutionRecord)
                    .where(ExecutionRecord.status == "running")
                    .order_by(col(ExecutionRecord.created_at))
                    .limit(limit)
                )
            ).all()
        changed = 0
        for row in rows:
            if (await self.reconcile(row)).status != "running":
                changed += 1
        return changed

    async def routes(self, id_or_tag: str) -> tuple[ExecutionRecord, list[RouteProgress]]:
        """Per-route progress: a live Temporal query while running, the stored runs afterwards."""
        record = await self.get(id_or_tag)
        if record.status == "running":
            try:
                client = await self.gateway.client()
                progress: ExecutionProgress = await asyncio.wait_for(
                    client.get_workflow_handle(record.workflow_id).query(
                        PROGRESS_QUERY, result_type=ExecutionProgress
                    ),
                    10,
                )
                return record, progress.routes
            except Exception as exc:
                record = await self.find(record.id)  # it may have finished in the meantime
                if record.status == "running":
                    raise self._progress_unavailable(record, exc) from exc
        async with self.sessions() as session:
            rows = (
                await session.exec(
                    select(RouteRunRecord)
                    .where(RouteRunRecord.execution_id == record.id)
                    .order_by(col(RouteRunRecord.position))
                )
            ).all()
        routes = [r.to_progress() for r in rows]
        if not routes:
            pipeline = PipelineConfig.from_snapshot(record.config_yaml)
            routes = [RouteProgress(route=r.name, position=i) for i, r in enumerate(pipeline.routes)]
        return record, routes

    def _progress_unavailable(self, record: ExecutionRecord, exc: Exception) -> UnavailableError:
        """A running execution's progress lives in its workflow: without Temporal (or a worker to
        answer the query) there is no honest answer, so say so instead of showing zeros."""
        if isinstance(exc, UnavailableError) or (
            isinstance(exc, RPCError)
            and exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED)
        ):
            self.gateway.forget()
            return UnavailableError(
                f"Temporal is not reachable at {self.settings.temporal_address}; the progress of running "
                f"execution {record.id} lives in its workflow",
                error_code="TEMPORAL_UNAVAILABLE",
            )
        return UnavailableError(
            f"no worker answered the progress query of running execution {record.id} ({type(exc).__name__}); "
            "start a worker (sluice worker)",
            error_code="PROGRESS_UNAVAILABLE",
        )

    async def running_count(self) -> int:
        async with self.sessions() as session:
            return int(
                (
                    await session.exec(
                        select(func.count())
                        .select_from(ExecutionRecord)
                        .where(
                            ExecutionRecord.status == "running", ExecutionRecord.trigger != DRY_RUN_TRIGGER
                        )
                    )
                ).one()
            )

    async def list(
        self, filters: ExecutionFilters, *, sort: str, order: str, limit: int, offset: int
    ) -> Page[ExecutionRecord]:
        """One query for the executions API and the runs facade; every filter and sort is indexed."""
        column = SORTABLE[sort]
        where = []
        for name in ("config_id", "pipeline", "namespace", "layer", "tag", "trigger", "parent_execution_id"):
            value = getattr(filters, name)
            if value is not None:
                where.append(getattr(ExecutionRecord, name) == value)
        if filters.statuses is not None:
            where.append(col(ExecutionRecord.status).in_(filters.statuses))
        if filters.created_from is not None:
            where.append(col(ExecutionRecord.created_at) >= filters.created_from)
        if filters.created_to is not None:
            where.append(col(ExecutionRecord.created_at) <= filters.created_to)
        if not filters.include_dry_runs:
            where.append(ExecutionRecord.trigger != DRY_RUN_TRIGGER)
        ordered = column.asc() if order == "asc" else column.desc()
        tiebreak = col(ExecutionRecord.id).asc() if order == "asc" else col(ExecutionRecord.id).desc()
        async with self.sessions() as session:
            total = (
                await session.exec(select(func.count()).select_from(ExecutionRecord).where(*where))
            ).one()
            rows = await session.exec(
                select(ExecutionRecord)
                .where(*where)
                .order_by(ordered.nulls_last() if sort in NULLABLE_SORTS else ordered, tiebreak)
                .offset(offset)
                .limit(limit)
            )
            return Page(items=list(rows.all()), total=int(total), limit=limit, offset=offset)

    # -- resume ------------------------------------------------------------------------------
    async def resume(
        self,
        id_or_tag: str,
        *,
        config: str = "snapshot",
        tag: str | None = None,
        triggered_by: str | None = None,
        execution_id: str | None = None,
    ) -> ExecutionRecord:
        """Start a new execution that does only what `id_or_tag` left undone: its stored outputs
        are carried over, the messages no route handled are sent again (see activities/resume.py).
        `config`: the source's snapshot, or the config's `latest` version (the fixed handler)."""
        if config not in ("snapshot", "latest"):
            raise InvalidArgumentError("config must be 'snapshot' or 'latest'", error_code="INVALID_ARGUMENT")
        source = await self.get(id_or_tag)
        if source.status not in RESUMABLE:
            raise FailedPreconditionError(
                f"execution {source.id} is {source.status}: only failed, cancelled or interrupted "
                "executions can be resumed",
                error_code="EXECUTION_NOT_RESUMABLE",
                extra={"status": source.status},
            )
        if source.replay is not None and "objects_published" not in source.replay:
            raise FailedPreconditionError(
                f"execution {source.id} is a replay that never finished publishing; replay it again instead",
                error_code="EXECUTION_NOT_RESUMABLE",
                extra={"status": source.status},
            )
        if config == "latest":
            current = await self.configs.current(source.config_id)
            pipeline, _ = require_valid(current.yaml)
            version, yaml_text = current.version, current.yaml
        else:
            pipeline = PipelineConfig.from_snapshot(source.config_yaml)
            version, yaml_text = source.config_version, source.config_yaml
        idempotent = execution_id is not None
        started = await self.start(
            NewExecution(
                execution_id=execution_id or str(uuid7()),
                config_id=source.config_id,
                config_version=version,
                yaml_text=yaml_text,
                pipeline=pipeline,
                init_message=None,
                tag=tag,
                trigger="resume",
                triggered_by=triggered_by,
                parent_execution_id=source.id,
                read_executions=await self._ancestry(source),
                params=source.params,
                resume=ResumeSpec(source_execution_id=source.id, config=config),  # type: ignore[arg-type]
            ),
            idempotent=idempotent,
        )
        return started.record

    async def _ancestry(self, record: ExecutionRecord) -> list[str]:
        """The execution and those it replayed or resumed, whose objects its handlers may read."""
        chain = [record.id]
        parent = record.parent_execution_id
        async with self.sessions() as session:
            while parent and parent not in chain and len(chain) < MAX_ANCESTRY:
                chain.append(parent)
                row = await session.get(ExecutionRecord, parent)
                parent = row.parent_execution_id if row else None
        return chain

    # -- cancel ------------------------------------------------------------------------------
    async def cancel(self, id_or_tag: str, *, graceful: bool = False) -> tuple[ExecutionRecord, bool]:
        """Request cancellation and wait (bounded) for it; returns (record, finished).

        Immediate (the default) cancels in-flight batches through their heartbeats; `graceful`
        lets them finish (their outputs are stored) and starts nothing new."""
        record = await self.get(id_or_tag)
        if record.status in TERMINAL:
            raise FailedPreconditionError(
                f"execution {record.id} is already {record.status}",
                error_code="EXECUTION_TERMINAL",
                extra={"status": record.status},
            )
        client = await self.gateway.client()
        handle = client.get_workflow_handle(record.workflow_id)
        try:
            if graceful:
                await handle.signal(STOP_GRACEFULLY_SIGNAL)
            await handle.cancel(reason="graceful cancel requested" if graceful else "cancel requested")
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return await self.reconcile(record), True
            self.gateway.forget()
            raise UnavailableError(f"could not cancel on Temporal: {exc.message}") from exc
        async with self.sessions() as session:
            session.add(
                ExecutionLogRecord(
                    **lifecycle_row(
                        record.id,
                        EXECUTION_CANCEL_REQUESTED,
                        "cancellation requested"
                        + (": in-flight batches finish, nothing new starts" if graceful else ""),
                        level="warn",
                        data={"mode": "graceful" if graceful else "immediate"},
                    )
                )
            )
            await session.commit()
        try:
            await asyncio.wait_for(handle.result(), self.settings.cancel_wait_seconds)
        except (WorkflowFailureError, RPCError):
            pass
        except TimeoutError:
            return await self.get(record.id), False
        return await self.get(record.id), True
