"""/api/scheduler (seed 002): scheduled pipelines as Temporal sees their schedules; pause, unpause."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from sluice.api.auth import Operator, Viewer
from sluice.api.deps import ServicesDep
from sluice.api.responses import CONFLICT, NOT_FOUND, UNAVAILABLE
from sluice.api.schemas import SchedulerStatusEntry
from sluice.errors import NotFoundError

router = APIRouter(prefix="/api/scheduler", tags=["pipelines (seed 002)"])

PipelineRef = Annotated[str, Path(min_length=1, max_length=255, description="Pipeline id (config id)")]


@router.get("/status", response_model=list[SchedulerStatusEntry], responses=UNAVAILABLE)
async def scheduler_status(services: ServicesDep, _: Viewer) -> list[SchedulerStatusEntry]:
    """Every pipeline with a `schedule`: cron, next and last run, enabled (not paused)."""
    return [SchedulerStatusEntry.of(s) for s in await services.schedules.status()]


async def _toggle(services: ServicesDep, pipeline_id: str, paused: bool) -> SchedulerStatusEntry:
    try:
        record = await services.configs.get(pipeline_id)
    except NotFoundError:
        raise NotFoundError(f"pipeline {pipeline_id} not found", error_code="PIPELINE_NOT_FOUND") from None
    await services.schedules.set_paused(record, paused)
    entry = next(s for s in await services.schedules.status() if s.config.id == record.id)
    return SchedulerStatusEntry.of(entry)


@router.post(
    "/{pipeline_id}/pause",
    response_model=SchedulerStatusEntry,
    responses={**NOT_FOUND, **CONFLICT, **UNAVAILABLE},
)
async def pause_schedule(
    pipeline_id: PipelineRef, services: ServicesDep, _: Operator
) -> SchedulerStatusEntry:
    """Stop the pipeline's schedule from firing (until unpaused or the config is written again)."""
    return await _toggle(services, pipeline_id, True)


@router.post(
    "/{pipeline_id}/unpause",
    response_model=SchedulerStatusEntry,
    responses={**NOT_FOUND, **CONFLICT, **UNAVAILABLE},
)
async def unpause_schedule(
    pipeline_id: PipelineRef, services: ServicesDep, _: Operator
) -> SchedulerStatusEntry:
    return await _toggle(services, pipeline_id, False)
