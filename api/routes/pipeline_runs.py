"""Seed 002's run API at its own paths: /api/pipelines/{pipeline_id}/... and /api/runs/{run_id}/...

Its words over Sluice's service layer: a pipeline is a config (`pipeline_id` = config id), a run
is an execution, a node is a route (`node_id` = route name). Same auth as /api/v1.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from sluice.api.auth import Operator, Viewer
from sluice.api.deps import API_PREFIX, IdempotencyKey, ServicesDep, reserved_execution
from sluice.api.logs import export_logs
from sluice.api.responses import (
    CONFLICT,
    IDEMPOTENT,
    INVALID_CONFIG,
    LOG_EXPORT,
    NOT_FOUND,
    UNAVAILABLE,
    error,
)
from sluice.api.schemas import (
    MAX_INT,
    SEED_002_LEVEL,
    BackfillRequest,
    DryRunNode,
    ExecutionRef,
    ExecutionResumeRequest,
    NodePreviewResponse,
    NodeProfileResponse,
    NodeRunResponse,
    PipelineRunAccepted,
    PipelineRunDetailResponse,
    PipelineRunLogEntry,
    PipelineRunPage,
    PipelineRunRequest,
    PipelineRunResponse,
    run_status,
)
from sluice.errors import FailedPreconditionError, NotFoundError
from sluice.services.executions import ExecutionFilters
from sluice.services.node_data import MAX_PREVIEW

pipelines = APIRouter(prefix="/api/pipelines", tags=["pipelines (seed 002)"])
runs = APIRouter(prefix="/api/runs", tags=["pipelines (seed 002)"])

PipelineRef = Annotated[str, Path(min_length=1, max_length=255, description="Pipeline id (config id)")]
RECENT = 50
SEED_LEVELS = {"debug": "debug", "info": "info", "warning": "warn", "warn": "warn", "error": "error"}


@asynccontextmanager
async def seed_statuses() -> AsyncIterator[None]:
    """A 409 names the run's current status in the seed's words (`success`, not `completed`)."""
    try:
        yield
    except FailedPreconditionError as exc:
        if "status" in exc.extra:
            exc.extra["status"] = run_status(exc.extra["status"])
        raise


async def _pipeline(services: Any, pipeline_id: str) -> Any:
    try:
        return await services.configs.get(pipeline_id)
    except NotFoundError:
        raise NotFoundError(f"pipeline {pipeline_id} not found", error_code="PIPELINE_NOT_FOUND") from None


@pipelines.post(
    "/{pipeline_id}/run",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=PipelineRunAccepted,
    responses={**NOT_FOUND, **INVALID_CONFIG, **UNAVAILABLE, **CONFLICT, **IDEMPOTENT},
)
async def run_pipeline(
    pipeline_id: PipelineRef,
    request: Request,
    services: ServicesDep,
    principal: Operator,
    body: Annotated[PipelineRunRequest | None, Body()] = None,
    idempotency_key: IdempotencyKey = None,
) -> PipelineRunAccepted:
    """Returns 202 at once; the run executes asynchronously (poll GET /api/runs/{id} or use /api/ws)."""
    config = await _pipeline(services, pipeline_id)
    record = await services.executions.run_config(
        config.id,
        params=body.params if body else None,
        triggered_by=principal.name,
        execution_id=await reserved_execution(request, services, principal, idempotency_key),
    )
    return PipelineRunAccepted(id=record.id, pipeline_id=record.config_id, status="pending")


@pipelines.get(
    "/{pipeline_id}/runs",
    response_model=list[PipelineRunResponse] | PipelineRunPage,
    responses=NOT_FOUND,
)
async def list_pipeline_runs(
    pipeline_id: PipelineRef,
    services: ServicesDep,
    _: Viewer,
    page: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None,
    per_page: Annotated[int | None, Query(ge=1, le=200)] = None,
    page_size: Annotated[int | None, Query(ge=1, le=200, description="Alias of per_page")] = None,
) -> list[PipelineRunResponse] | PipelineRunPage:
    """The 50 most recent runs; with `page` and/or `per_page` (or `page_size`) a page object."""
    config = await _pipeline(services, pipeline_id)
    filters = ExecutionFilters(config_id=config.id)
    if page is None and per_page is None and page_size is None:
        found = await services.executions.list(
            filters, sort="created_at", order="desc", limit=RECENT, offset=0
        )
        return [PipelineRunResponse.of(r) for r in found.items]
    size = per_page or page_size or RECENT
    number = page or 1
    found = await services.executions.list(
        filters, sort="created_at", order="desc", limit=size, offset=min((number - 1) * size, MAX_INT)
    )
    return PipelineRunPage(
        items=[PipelineRunResponse.of(r) for r in found.items],
        total=found.total,
        page=number,
        per_page=size,
        pages=math.ceil(found.total / size),
    )


@pipelines.post(
    "/{pipeline_id}/backfill",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=list[str],
    responses={**NOT_FOUND, **INVALID_CONFIG, **UNAVAILABLE},
)
async def backfill_pipeline(
    pipeline_id: PipelineRef,
    body: BackfillRequest,
    services: ServicesDep,
    response: Response,
    principal: Operator,
) -> list[str]:
    """One run per date from `start_date` to `end_date` (inclusive), each with `params.date`,
    started in date order, `max_parallel` at a time, by a durable workflow. Answers the run ids
    at once; `Location` names the backfill (GET it for per-date progress). With `only_missing`
    (default) dates that already have a successful run are left out."""
    config = await _pipeline(services, pipeline_id)
    record, reserved = await services.backfills.create(
        config.id,
        start_date=body.start_date,
        end_date=body.end_date,
        max_parallel=body.max_parallel,
        only_missing=body.only_missing,
        created_by=principal.name,
    )
    response.headers["Location"] = f"{API_PREFIX}/backfills/{record.id}"
    response.headers["Sluice-Backfill-Id"] = record.id
    return [r.execution_id for r in reserved]


@pipelines.post(
    "/{pipeline_id}/dry-run",
    response_model=dict[str, DryRunNode],
    responses={
        **NOT_FOUND,
        **INVALID_CONFIG,
        **UNAVAILABLE,
        504: error(
            "DRY_RUN_TIMEOUT: not finished within SLUICE_DRY_RUN_TIMEOUT; `nodes` holds what finished"
        ),
    },
)
async def dry_run_pipeline(
    pipeline_id: PipelineRef,
    services: ServicesDep,
    principal: Operator,
    body: Annotated[PipelineRunRequest | None, Body()] = None,
) -> dict[str, DryRunNode]:
    """Run the pipeline for real on the workers, in preview mode: each route handles at most 10
    messages, each node shows at most 10 rows, and everything the run wrote is removed afterwards
    (it appears in no list, calendar or dashboard). A failing node is `failed` with its `error`;
    the others still report."""
    config = await _pipeline(services, pipeline_id)
    nodes = await services.dry_runs.run(config.id, body.params if body else None, triggered_by=principal.name)
    return {name: DryRunNode(**node.__dict__) for name, node in nodes.items()}


@runs.get("/{run_id}", response_model=PipelineRunDetailResponse, responses={**NOT_FOUND, **UNAVAILABLE})
async def get_run(run_id: ExecutionRef, services: ServicesDep, _: Viewer) -> PipelineRunDetailResponse:
    """A running run whose routes have not started yet, or a backfill's run still waiting for
    its turn, is `pending`."""
    try:
        record, routes = await services.executions.routes(run_id)
    except NotFoundError:
        waiting = await services.backfills.pending_run(run_id)
        if waiting is None:
            raise
        run, backfill = waiting
        return PipelineRunDetailResponse(
            id=run.execution_id,
            pipeline_id=backfill.config_id,
            status="pending" if backfill.status == "running" else "cancelled",
            started_at=None,
            finished_at=None,
            params={"date": run.run_date},
            trigger=f"backfill:{backfill.id}",
        )
    waiting = record.status == "running" and all(p.status == "pending" for p in routes)
    detail = PipelineRunDetailResponse.model_validate(
        {
            **PipelineRunResponse.of(record, "pending" if waiting else None).model_dump(),
            "node_runs": [NodeRunResponse.of(record.id, p) for p in routes],
            "resume": record.resume,
            "temporal_ui_url": services.settings.workflow_ui_url(record.workflow_id),
        }
    )
    return detail


@runs.post(
    "/{run_id}/cancel",
    response_model=PipelineRunAccepted,
    responses={
        **NOT_FOUND,
        202: {"model": PipelineRunAccepted, "description": "Stopping: nodes in flight are finishing"},
        **CONFLICT,
        **UNAVAILABLE,
    },
)
async def cancel_run(
    run_id: ExecutionRef, services: ServicesDep, response: Response, _: Operator
) -> PipelineRunAccepted:
    """Nodes currently executing finish (their outputs are stored), no new node starts; the run
    ends `cancelled`. 200 once it has, 202 while in-flight batches are still finishing."""
    async with seed_statuses():
        record, finished = await services.executions.cancel(run_id, graceful=True)
    if not finished:
        response.status_code = status.HTTP_202_ACCEPTED
    return PipelineRunAccepted(
        id=record.id, pipeline_id=record.config_id, status=PipelineRunResponse.of(record).status
    )


@runs.post(
    "/{run_id}/resume",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=PipelineRunAccepted,
    responses={**NOT_FOUND, **CONFLICT, **INVALID_CONFIG, **UNAVAILABLE, **IDEMPOTENT},
)
async def resume_run(
    run_id: ExecutionRef,
    request: Request,
    services: ServicesDep,
    principal: Operator,
    body: Annotated[ExecutionResumeRequest | None, Body()] = None,
    idempotency_key: IdempotencyKey = None,
) -> PipelineRunAccepted:
    """Re-run what a failed, cancelled or interrupted run left undone, as a new run: nodes that
    succeeded are skipped and their stored outputs reused. 409 (with `status`) for other runs."""
    async with seed_statuses():
        record = await services.executions.resume(
            run_id,
            config=body.config if body else "snapshot",
            tag=body.tag if body else None,
            triggered_by=principal.name,
            execution_id=await reserved_execution(request, services, principal, idempotency_key),
        )
    return PipelineRunAccepted(id=record.id, pipeline_id=record.config_id, status="pending")


@runs.get("/{run_id}/logs", response_model=list[PipelineRunLogEntry], responses=NOT_FOUND)
async def get_run_logs(
    run_id: ExecutionRef,
    services: ServicesDep,
    _: Viewer,
    node_id: Annotated[str | None, Query(max_length=128)] = None,
    level: Annotated[
        Literal["debug", "info", "warning", "warn", "error"] | None,
        Query(description="this level and above"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=50_000)] = 10_000,
) -> list[PipelineRunLogEntry]:
    record = await services.executions.get(run_id)
    rows = await services.logs.fetch(
        record.id, route=node_id, level=SEED_LEVELS[level] if level else None, limit=limit
    )
    return [
        PipelineRunLogEntry(
            run_id=record.id,
            node_id=r.route,
            level=SEED_002_LEVEL.get(r.level, "info"),
            message=r.message,
            timestamp=r.timestamp,
        )
        for r in rows
    ]


@runs.get("/{run_id}/logs/export", responses={**NOT_FOUND, **LOG_EXPORT}, response_class=StreamingResponse)
async def export_run_logs(
    run_id: ExecutionRef,
    services: ServicesDep,
    _: Viewer,
    node_id: Annotated[str | None, Query(max_length=128)] = None,
    level: Literal["debug", "info", "warning", "warn", "error"] | None = None,
) -> StreamingResponse:
    """A text file, one line per entry: `timestamp LEVEL [node] message`."""
    record = await services.executions.get(run_id)
    return export_logs(
        services,
        record,
        format="text",
        route=node_id,
        level=SEED_LEVELS[level] if level else None,
        level_words=SEED_002_LEVEL,
    )


NodeRef = Annotated[str, Path(min_length=1, max_length=128, description="Node id (route name)")]
PreviewLimit = Annotated[int, Query(ge=1, le=MAX_PREVIEW, description="Rows (at most 500)")]


@runs.get("/{run_id}/nodes/{node_id}/preview", response_model=NodePreviewResponse, responses=NOT_FOUND)
async def preview_node(
    run_id: ExecutionRef, node_id: NodeRef, services: ServicesDep, _: Viewer, limit: PreviewLimit = 50
) -> NodePreviewResponse:
    """The first rows of the node's output (JSON, JSON Lines, CSV, Parquet or text objects); 404
    when it wrote nothing, or nothing tabular."""
    record = await services.executions.find(run_id)
    preview = await services.node_data.preview(record, node_id, limit)
    return NodePreviewResponse(columns=preview.columns, rows=preview.rows)


@runs.get("/{run_id}/nodes/{node_id}/profile", response_model=NodeProfileResponse, responses=NOT_FOUND)
async def profile_node(
    run_id: ExecutionRef, node_id: NodeRef, services: ServicesDep, _: Viewer
) -> NodeProfileResponse:
    """Per-column statistics of everything the node wrote (computed with Arrow, cached once the
    run has ended), and `drift` against the same node in the pipeline's previous successful run."""
    record = await services.executions.find(run_id)
    profile = await services.node_data.profile(record, node_id)
    return NodeProfileResponse.model_validate(
        {**profile.__dict__, "compared_with_run_id": profile.compared_with}
    )
