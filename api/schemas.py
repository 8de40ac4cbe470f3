"""Request and response models. Field names, enums and status codes follow the seeds."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Self
from uuid import UUID

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

from sluice.auth.roles import Role
from sluice.clock import UtcDatetime
from sluice.db.models import ExecutionRecord, LineageRecord
from sluice.services.backfills import BackfillView
from sluice.services.insights import PipelineSummary
from sluice.services.schedules import ScheduleStatus
from sluice.settings import Settings
from sluice.validation import ValidationReport
from sluice.workflow_io import RouteProgress

MAX_INT = 2**31 - 1  # bound for counts, offsets and versions in requests (never a 500 on overflow)
MAX_ID = 2**63 - 1  # bound for log ids (BIGINT)

ExecutionRef = Annotated[str, Path(min_length=1, max_length=255, description="Execution id (UUID) or tag")]

ExecutionStatus = Literal["running", "completed", "failed", "cancelled", "interrupted"]
ReplaySource = Literal["storage", "lineage", "manual"]


class ErrorResponse(BaseModel):
    """Standard error response matching FastAPI HTTPException format."""

    detail: str = Field(description="Error message (matches FastAPI HTTPException)")
    error_code: str | None = None
    correlation_id: str | None = None
    timestamp: datetime = Field(description="Error timestamp")


class UnprocessableResponse(BaseModel):
    """422: FastAPI's list of validation errors in `detail` (or one message, e.g. for
    IDEMPOTENCY_KEY_REUSED), with the ErrorResponse fields."""

    detail: str | list[dict[str, Any]]
    error_code: str | None = None
    correlation_id: str | None = None
    timestamp: datetime


class ValidationErrorResponse(ErrorResponse, ValidationReport):
    """400 for an invalid config: the ErrorResponse fields plus the full validation report."""


class ConfigYamlBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    yaml: str = Field(description="The pipeline YAML", max_length=1_048_576)


class ConfigResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID
    name: str
    namespace: str
    layer: str
    description: str | None
    version: int
    config_hash: str
    yaml: str
    created_at: UtcDatetime
    updated_at: UtcDatetime
    created_by: str | None = Field(default=None, description="Who stored the first version")
    updated_by: str | None = Field(default=None, description="Who stored the latest version")


class ConfigListResponse(BaseModel):
    items: list[ConfigResponse]
    total: int
    limit: int
    offset: int


class ConfigVersionResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    config_id: UUID
    version: int
    config_hash: str
    yaml: str
    created_at: UtcDatetime
    created_by: str | None = Field(default=None, description="Who wrote this version")


class ExecutionResponse(BaseModel):
    """Pipeline execution response. Storage paths use the execution id (UUID v7) directly."""

    model_config = ConfigDict(from_attributes=True)

    id: UUID = Field(description="Execution UUID (used for storage paths)")
    config_id: UUID = Field(description="Configuration ID")
    status: ExecutionStatus = Field(description="Current status")
    started_at: UtcDatetime = Field(description="Start timestamp")
    completed_at: UtcDatetime | None = None
    parent_execution_id: UUID | None = None
    replay_source: ReplaySource | None = None
    tag: str | None = None
    # Sluice additions (clients of the seed ignore them):
    config_version: int
    pipeline: str
    namespace: str
    layer: str
    trigger: str
    triggered_by: str | None = Field(default=None, description="Who started it (token name or OIDC user)")
    error: str | None = None
    duration_ms: int | None = None
    messages_processed: int = 0
    objects_written: int = 0
    rows_written: int | None = None
    created_at: UtcDatetime
    workflow_id: str
    temporal_ui_url: str | None = None
    replay: dict[str, Any] | None = Field(
        default=None, description="For replays: source, target route, batch id and publishing counts"
    )
    params: dict[str, Any] | None = Field(default=None, description="Run params given at start")
    resume: dict[str, Any] | None = Field(
        default=None, description="For resumes: the source, objects carried over, messages handled again"
    )

    @classmethod
    def of(cls, r: ExecutionRecord, settings: Settings) -> ExecutionResponse:
        out = cls.model_validate(r)
        out.temporal_ui_url = settings.workflow_ui_url(r.workflow_id)
        return out


class ExecutionRoutesResponse(BaseModel):
    execution_id: UUID
    status: ExecutionStatus
    routes: list[RouteProgress]


class ExecutionReplayRequest(BaseModel):
    """Request to replay a pipeline execution (seed 001). For `manual`, name the objects in
    `metadata.keys` (a list) or `from_path` (one key); keys may be full (`{execution}/{stage}/...`)
    or relative to the parent's `from_stage`."""

    model_config = ConfigDict(extra="forbid")

    replay_source: ReplaySource = Field(description="Type of replay")
    from_stage: str = Field(min_length=1, max_length=255, description="Pipeline stage to replay from")
    to_route: str = Field(min_length=1, max_length=128, description="Target route name")
    from_path: str | None = Field(default=None, max_length=1024)
    metadata: dict[str, Any] | None = None
    tag: str | None = None
    config_id: UUID | None = None


class DetachedReplayRequest(BaseModel):
    """Request model for detached replay API (seed 004)."""

    model_config = ConfigDict(extra="forbid")

    from_execution_id: UUID = Field(description="UUID of the source execution to replay from")
    from_stage: str = Field(min_length=1, max_length=255, description="Pipeline stage name")
    from_path: str | None = Field(default=None, max_length=1024)
    to_route: str = Field(min_length=1, max_length=128, description="Target route name to replay to")


class DetachedReplayResponse(BaseModel):
    """Counts and status of a detached replay (seed 004)."""

    execution_id: UUID = Field(description="New execution UUID for replayed messages")
    from_execution_id: UUID
    from_stage: str
    from_path: str | None
    to_route: str
    to_queue: str = Field(description="Target queue that received messages")
    objects_found: int
    objects_published: int
    objects_failed: int = 0
    status: Literal["publishing_complete", "partial_failure"]
    replay_batch_id: UUID
    errors: list[str] | None = None


class LineageNode(BaseModel):
    id: str = Field(description="correlation id of the message (or of the object record)")
    kind: Literal["message", "object"]
    execution_id: UUID
    route: str = Field(description="route the message was sent to (for objects: the route that wrote it)")
    source_route: str | None = Field(description="route that emitted it; null for init and replay messages")
    stage: str | None
    object_key: str | None
    replay_batch_id: str | None
    created_at: UtcDatetime

    @classmethod
    def of(cls, r: LineageRecord) -> LineageNode:
        kind = "object" if r.source_route is not None and r.route == r.source_route else "message"
        return cls.model_validate({**r.model_dump(), "id": r.correlation_id, "kind": kind})


class LineageEdge(BaseModel):
    source: str = Field(description="parent correlation id")
    target: str


class LineageResponse(BaseModel):
    execution_id: UUID
    object_key: str | None = None
    nodes: list[LineageNode]
    edges: list[LineageEdge]
    truncated: bool = False


class ExecutionListResponse(BaseModel):
    items: list[ExecutionResponse]
    total: int
    limit: int
    offset: int


class LogEntryResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    timestamp: UtcDatetime
    level: Literal["debug", "info", "warn", "error"]
    message: str
    route: str | None
    kind: Literal["handler", "lifecycle"]
    event: str | None = None
    correlation_id: str | None = None


class ExecutionLogsResponse(BaseModel):
    execution_id: UUID
    status: ExecutionStatus
    logs: list[LogEntryResponse]


# -- runs facade (seed 003, with seed 002's node_runs) -------------------------------------------
RunStatus = Literal["pending", "running", "success", "failed", "cancelled"]
# Seed 003's words for execution statuses, and back (a run filter may match several statuses).
RUN_STATUS: dict[str, RunStatus] = {
    "running": "running",
    "completed": "success",
    "failed": "failed",
    "cancelled": "cancelled",
    "interrupted": "failed",
}
EXECUTION_STATUSES: dict[str, list[str]] = {
    "pending": [],
    "running": ["running"],
    "success": ["completed"],
    "failed": ["failed", "interrupted"],
    "cancelled": ["cancelled"],
}


def run_status(execution_status: str) -> RunStatus:
    return RUN_STATUS.get(execution_status, "failed")


class NodeRunResponse(BaseModel):
    """A route's run inside a run (seed 002's node run, plus Sluice's counters)."""

    id: str
    node_id: str
    status: Literal["pending", "running", "success", "failed", "cancelled", "skipped"]
    row_count: int | None
    duration_ms: int | None
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None = None
    messages_in: int = 0
    messages_out: int = 0
    objects_written: int = 0
    retries: int = 0
    worker_losses: int = 0
    error: str | None = None

    @classmethod
    def of(cls, execution_id: str, p: RouteProgress) -> NodeRunResponse:
        """Seed 002's words for a route's progress."""
        return cls(
            id=f"{execution_id}:{p.route}",
            node_id=p.route,
            status="success" if p.status == "completed" else p.status,
            row_count=p.rows_written,
            duration_ms=p.duration_ms,
            started_at=p.started_at,
            finished_at=p.completed_at if p.status not in ("running", "pending") else None,
            **p.model_dump(
                include={
                    "messages_in",
                    "messages_out",
                    "objects_written",
                    "retries",
                    "worker_losses",
                    "error",
                }
            ),
        )


class RunResponse(BaseModel):
    id: str
    namespace: str
    layer: str
    pipeline: str
    status: RunStatus
    trigger: str
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    duration_ms: int | None
    rows_written: int | None
    error: str | None = None
    created_at: UtcDatetime
    params: dict[str, Any] = Field(default_factory=dict, description="Run params given at start")

    @classmethod
    def of(cls, r: ExecutionRecord) -> Self:
        """Seed 003's words for an execution (an interrupted one is `failed` and says why)."""
        error = (
            f"interrupted: {r.error or 'workflow ended outside Sluice'}"
            if r.status == "interrupted"
            else r.error
        )
        return cls.model_validate(
            {
                **r.model_dump(include={"id", "namespace", "layer", "pipeline", "trigger", "started_at"}),
                **r.model_dump(include={"duration_ms", "rows_written", "created_at"}),
                "status": run_status(r.status),
                "finished_at": r.completed_at,
                "error": error,
                "params": r.params or {},
            }
        )


class RunDetailResponse(RunResponse):
    node_runs: list[NodeRunResponse] = Field(default_factory=list)
    temporal_ui_url: str | None = None


class RunListResponse(BaseModel):
    runs: list[RunResponse]
    total: int


class RunCreateRequest(BaseModel):
    """Trigger the latest config of a pipeline (seed 003)."""

    namespace: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
    layer: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
    pipeline: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
    trigger: str = Field(default="manual", pattern=r"^[A-Za-z0-9_.:/-]{1,64}$")
    params: dict[str, Any] | None = Field(default=None, description="Run params (override the pipeline's)")


class RunCreatedResponse(BaseModel):
    run_id: str
    status: Literal["pending"]


class RunCancelledResponse(BaseModel):
    run_id: str
    status: Literal["cancelled"]


class RunLogEntry(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    timestamp: UtcDatetime
    level: Literal["debug", "info", "warn", "error"]
    message: str


class RunLogsResponse(BaseModel):
    logs: list[RunLogEntry]
    status: RunStatus


class ExecutionConfigResponse(BaseModel):
    execution_id: UUID
    config_id: UUID
    config_version: int
    config_hash: str
    yaml: str


class TokenCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")
    role: Role
    expires_in: str | None = Field(default=None, max_length=32, description="e.g. 90d, 12h; none: never")


class TokenResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    role: Role
    created_at: UtcDatetime
    created_by: str | None
    last_used_at: UtcDatetime | None
    expires_at: UtcDatetime | None
    revoked_at: UtcDatetime | None


class TokenCreatedResponse(TokenResponse):
    token: str = Field(description="The token itself: shown once, store it now")


class ExecutionResumeRequest(BaseModel):
    """Resume a failed, cancelled or interrupted execution (body optional)."""

    model_config = ConfigDict(extra="forbid")

    config: Literal["snapshot", "latest"] = Field(
        default="snapshot",
        description="`snapshot`: the config the source ran; `latest`: the config's current version "
        "(after fixing a handler)",
    )
    tag: str | None = Field(default=None, max_length=255)


# -- seed 002's run API (/api/pipelines, /api/runs) -------------------------------------------------
PipelineRunLevel = Literal["debug", "info", "warning", "error"]
SEED_002_LEVEL: dict[str, PipelineRunLevel] = {
    "debug": "debug",
    "info": "info",
    "warn": "warning",
    "error": "error",
}


class PipelineRunRequest(BaseModel):
    """Trigger a pipeline (seed 002); `params` override the pipeline's params for this run."""

    model_config = ConfigDict(extra="forbid")

    params: dict[str, Any] | None = Field(default=None, description="Run params (`${param.NAME}`)")


class PipelineRunAccepted(BaseModel):
    id: str
    pipeline_id: str
    status: RunStatus


class PipelineRunResponse(BaseModel):
    """A run of a pipeline (seed 002), with Sluice's extras after the seed's fields."""

    id: str
    pipeline_id: str
    status: RunStatus
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    error: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    trigger: str
    duration_ms: int | None = None
    parent_run_id: str | None = Field(default=None, description="The run this one resumed or replayed")

    @classmethod
    def of(cls, r: ExecutionRecord, status: RunStatus | None = None) -> Self:
        return cls(
            id=r.id,
            pipeline_id=r.config_id,
            status=status or run_status(r.status),
            started_at=r.started_at,
            finished_at=r.completed_at,
            error=(
                f"interrupted: {r.error or 'workflow ended outside Sluice'}"
                if r.status == "interrupted"
                else r.error
            ),
            params=r.params or {},
            trigger=r.trigger,
            duration_ms=r.duration_ms,
            parent_run_id=r.parent_execution_id,
        )


class PipelineRunDetailResponse(PipelineRunResponse):
    node_runs: list[NodeRunResponse] = Field(default_factory=list)
    resume: dict[str, Any] | None = None
    temporal_ui_url: str | None = None


class PipelineRunPage(BaseModel):
    items: list[PipelineRunResponse]
    total: int
    page: int
    per_page: int
    pages: int


class PipelineRunLogEntry(BaseModel):
    run_id: str
    node_id: str | None
    level: PipelineRunLevel
    message: str
    timestamp: UtcDatetime


class BackfillRequest(BaseModel):
    """Run a pipeline once per date of a range (seed 002); each run gets `params.date`."""

    model_config = ConfigDict(extra="forbid")

    start_date: Any = Field(description="First date, YYYY-MM-DD")
    end_date: Any = Field(description="Last date (inclusive), YYYY-MM-DD")
    max_parallel: int = Field(default=1, ge=1, le=50, description="Runs in flight at once")
    only_missing: bool = Field(default=True, description="Skip dates that already have a successful run")


class BackfillDate(BaseModel):
    date: str
    run_id: str
    status: Literal["pending", "running", "success", "failed", "cancelled", "skipped"]
    note: str | None = None


class BackfillResponse(BaseModel):
    id: str
    pipeline_id: str
    pipeline: str
    start_date: str
    end_date: str
    max_parallel: int
    only_missing: bool
    status: Literal["running", "completed", "failed", "cancelled", "interrupted"]
    error: str | None = None
    created_at: UtcDatetime
    created_by: str | None = None
    completed_at: UtcDatetime | None = None
    counts: dict[str, int] = Field(description="Dates per status")
    dates: list[BackfillDate]

    @classmethod
    def of(cls, view: BackfillView) -> BackfillResponse:
        record = view.record
        dates = []
        for run in view.runs:
            execution = view.executions.get(run.execution_id)
            if execution is not None:
                status: str = run_status(execution.status)
            elif run.state in ("skipped", "failed"):
                status = run.state
            else:
                status = "pending" if record.status == "running" else "cancelled"
            dates.append(
                BackfillDate(date=run.run_date, run_id=run.execution_id, status=status, note=run.note)
            )  # type: ignore[arg-type]
        counts: dict[str, int] = {}
        for d in dates:
            counts[d.status] = counts.get(d.status, 0) + 1
        return cls(
            id=record.id,
            pipeline_id=record.config_id,
            counts=counts,
            dates=dates,
            **record.model_dump(
                include={
                    "pipeline",
                    "start_date",
                    "end_date",
                    "max_parallel",
                    "only_missing",
                    "status",
                    "error",
                    "created_at",
                    "created_by",
                    "completed_at",
                }
            ),
        )


class SchedulerStatusEntry(BaseModel):
    """A scheduled pipeline as Temporal sees its schedule (seed 002), with Sluice's extras."""

    pipeline_id: str
    pipeline_name: str
    cron: str = Field(description="The cron expression, or `every <interval>`")
    next_run: UtcDatetime | None
    last_run: UtcDatetime | None
    enabled: bool
    timezone: str
    overlap: str
    in_temporal: bool = Field(description="False until the schedule could be written to Temporal")

    @classmethod
    def of(cls, status: ScheduleStatus) -> SchedulerStatusEntry:
        return cls(
            pipeline_id=status.config.id,
            pipeline_name=status.config.name,
            cron=status.spec.describe(),
            next_run=status.next_run,
            last_run=status.last_run,
            enabled=status.enabled,
            timezone=status.spec.timezone,
            overlap=status.spec.overlap,
            in_temporal=status.in_temporal,
        )


class NodePreviewResponse(BaseModel):
    """The first rows a node (route) wrote (seed 002)."""

    columns: list[str]
    rows: list[dict[str, Any]]


class ColumnProfile(BaseModel):
    name: str
    type: str = Field(description="Arrow type name (int64, double, string, timestamp[s], ...)")
    null_count: int
    null_pct: float
    unique_count: int
    unique_pct: float
    min: Any = None
    max: Any = None
    mean: float | None = None
    sample_values: list[Any] = Field(default_factory=list)


class DriftEntry(BaseModel):
    column: str
    change: Literal["column_added", "column_removed", "type_changed", "null_spike"]
    previous: Any = None
    current: Any = None


class NodeProfileResponse(BaseModel):
    """Per-column statistics of what a node wrote (seed 002), with drift against the pipeline's
    previous successful run."""

    row_count: int
    column_count: int
    columns: list[ColumnProfile]
    profiling_ms: int
    drift: list[DriftEntry] = Field(default_factory=list)
    compared_with_run_id: str | None = Field(default=None, description="The run drift compares with")


class CalendarDay(BaseModel):
    date: str = Field(description="UTC day, YYYY-MM-DD")
    success: int
    failed: int = Field(description="failed and interrupted runs")
    total: int = Field(description="every run started that day, whatever its status")


class DashboardPipeline(BaseModel):
    id: str
    name: str
    namespace: str
    layer: str
    last_run_id: str | None
    last_run_status: RunStatus | None
    last_run_at: UtcDatetime | None
    runs_7d: int
    success_rate_7d: float | None = Field(description="percent of the last 7 days' runs that succeeded")

    @classmethod
    def of(cls, summary: PipelineSummary) -> DashboardPipeline:
        run = summary.last_run
        return cls(
            id=summary.config.id,
            name=summary.config.name,
            namespace=summary.config.namespace,
            layer=summary.config.layer,
            last_run_id=run.id if run else None,
            last_run_status=run_status(run.status) if run else None,
            last_run_at=run.created_at if run else None,
            runs_7d=summary.runs_7d,
            success_rate_7d=summary.success_rate_7d,
        )


class TopFailing(BaseModel):
    pipeline_id: str
    name: str
    fail_count: int


class DashboardResponse(BaseModel):
    pipelines: list[DashboardPipeline]
    recent_runs: list[PipelineRunResponse]
    trends: list[CalendarDay]
    top_failing: list[TopFailing]


class SearchResult(BaseModel):
    type: Literal["pipeline", "route", "stage", "execution"]
    id: str
    name: str
    description: str | None = None
    pipeline_id: str | None = None


class SystemInfoResponse(BaseModel):
    """Seed 002's system info, plus what an operator of Sluice needs."""

    version: str
    db_size: int = Field(description="bytes")
    db_size_mb: str
    pipelines: int
    active_runs: int
    max_concurrent_runs: int | None = Field(
        description="Sluice does not cap concurrent runs (Temporal queues them): null"
    )
    database: dict[str, Any]
    temporal: dict[str, Any] = Field(description="address, namespace, reachable (and error when not)")
    workers: list[dict[str, Any]] = Field(description="per task queue and kind, the pollers Temporal lists")
    storage: dict[str, Any]


class PurgeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    days: int = Field(default=30, ge=1, le=36_500, description="delete executions created before now - days")


class PurgeResponse(BaseModel):
    deleted: int
    days: int
    objects_deleted: int = 0
    skipped_active: int = Field(default=0, description="older executions still running, never deleted")
    kept_as_ancestors: int = Field(
        default=0, description="older executions kept because a newer replay or resume reads their objects"
    )
    kept_ids: list[str] = Field(default_factory=list, description="the first of those (at most 20)")
    note: str | None = None


class PlatformLineageNode(BaseModel):
    id: str
    type: Literal["route", "stage", "folder", "bucket"]
    name: str
    pipeline_id: str | None = Field(description="null for external sources")


class PlatformLineageEdge(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from")
    to: str
    pipeline_id: str = Field(description="the pipeline whose config (or replay) makes this edge")


class PlatformLineageResponse(BaseModel):
    nodes: list[PlatformLineageNode]
    edges: list[PlatformLineageEdge]


class DryRunNode(BaseModel):
    """One node of a dry run (seed 002): what it did and the first rows it wrote."""

    node_id: str
    name: str
    status: Literal["success", "failed", "cancelled", "skipped", "pending", "running"]
    columns: list[str] = Field(default_factory=list)
    rows: list[dict[str, Any]] = Field(default_factory=list, description="at most 10")
    error: str | None = None
    messages_processed: int = 0
