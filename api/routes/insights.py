"""Seed 002's cross-cutting endpoints: the runs calendar, the dashboard, search, system info and
purge."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query

from sluice.api.auth import Admin, Viewer
from sluice.api.deps import ServicesDep
from sluice.api.responses import error
from sluice.api.schemas import (
    CalendarDay,
    DashboardPipeline,
    DashboardResponse,
    PipelineRunResponse,
    PlatformLineageEdge,
    PlatformLineageNode,
    PlatformLineageResponse,
    PurgeRequest,
    PurgeResponse,
    SearchResult,
    SystemInfoResponse,
    TopFailing,
)

router = APIRouter(prefix="/api", tags=["platform (seed 002)"])


@router.get("/runs/calendar", response_model=list[CalendarDay])
async def runs_calendar(
    services: ServicesDep, _: Viewer, days: Annotated[int, Query(ge=1, le=365)] = 90
) -> list[CalendarDay]:
    """Runs per UTC day that has any, over the last `days` days (today included), oldest first."""
    return [CalendarDay(**d.__dict__) for d in await services.insights.calendar(days)]


@router.get("/dashboard", response_model=DashboardResponse)
async def dashboard(services: ServicesDep, _: Viewer) -> DashboardResponse:
    """Pipeline summaries, the 20 most recent runs, 7 days of trends (every day, zeros included)
    and the 5 pipelines with most failures in 7 days, in one request."""
    board = await services.insights.dashboard()
    return DashboardResponse(
        pipelines=[DashboardPipeline.of(p) for p in board.pipelines],
        recent_runs=[PipelineRunResponse.of(r) for r in board.recent_runs],
        trends=[CalendarDay(**d.__dict__) for d in board.trends],
        top_failing=[TopFailing(pipeline_id=i, name=n, fail_count=c) for i, n, c in board.top_failing],
    )


@router.get("/search", response_model=list[SearchResult])
async def search(
    services: ServicesDep,
    _: Viewer,
    q: Annotated[str, Query(min_length=1, max_length=200, description="case-insensitive substring")],
    limit: Annotated[int, Query(ge=1, le=100)] = 30,
) -> list[SearchResult]:
    """Pipelines (name, description), routes, stages and execution tags matching `q`."""
    return [
        SearchResult(type=h.type, id=h.id, name=h.name, description=h.description, **h.extra)  # type: ignore[arg-type]
        for h in await services.insights.search(q, limit)
    ]


@router.get("/system/info", response_model=SystemInfoResponse)
async def system_info(services: ServicesDep, _: Viewer) -> SystemInfoResponse:
    """Database size, pipelines, active runs; Temporal reachable, the workers polling each task
    queue (from Temporal's task-queue description), the storage backend."""
    return SystemInfoResponse(**await services.system.info())


@router.post(
    "/system/purge",
    response_model=PurgeResponse,
    responses={400: error("INVALID_ARGUMENT: the body is not JSON")},
)
async def system_purge(
    services: ServicesDep, _: Admin, body: Annotated[PurgeRequest | None, Body()] = None
) -> PurgeResponse:
    """[admin] Delete executions older than `days` (default 30) with their logs, lineage, node runs
    and stored objects; never a running one, never the ancestor of a replay or resume that stays.
    Batched and safe to run again after a crash (`sluice purge --days N` does the same)."""
    result = await services.system.purge((body or PurgeRequest()).days)
    notes = []
    if result.skipped_active:
        notes.append(f"{result.skipped_active} older execution(s) still running were kept")
    if result.kept_as_ancestors:
        notes.append(
            f"{result.kept_as_ancestors} older execution(s) were kept: newer replays or resumes read their objects"
        )
    return PurgeResponse(**result.__dict__, note="; ".join(notes) or None)


@router.get("/lineage", response_model=PlatformLineageResponse)
async def platform_lineage(services: ServicesDep, _: Viewer) -> PlatformLineageResponse:
    """Across all pipelines: routes, the stages they write and read, the folders and buckets
    built-ins read, and the edges replays created from one pipeline's stage into another's route.
    Per-execution message lineage stays at /api/v1/executions/{id}/lineage."""
    graph = await services.lineage.platform()
    return PlatformLineageResponse(
        nodes=[PlatformLineageNode(**n) for n in graph.nodes.values()],
        edges=[PlatformLineageEdge(from_=a, to=b, pipeline_id=p) for a, b, p in graph.edges],
    )
