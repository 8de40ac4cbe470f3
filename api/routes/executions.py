"""/api/v1/executions: read by id or tag, per-route progress, cancel."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Body, Path, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from sluice.api.auth import Operator, Viewer
from sluice.api.deps import IdempotencyKey, ServicesDep, reserved_execution
from sluice.api.logs import export_logs, log_stream, wants_sse
from sluice.api.responses import CONFLICT, IDEMPOTENT, INVALID_CONFIG, LOG_EXPORT, NOT_FOUND, UNAVAILABLE
from sluice.api.schemas import (
    MAX_ID,
    MAX_INT,
    ExecutionConfigResponse,
    ExecutionListResponse,
    ExecutionLogsResponse,
    ExecutionRef,
    ExecutionResponse,
    ExecutionResumeRequest,
    ExecutionRoutesResponse,
    ExecutionStatus,
    LogEntryResponse,
    NodePreviewResponse,
)
from sluice.clock import as_utc
from sluice.services.executions import ExecutionFilters
from sluice.services.node_data import MAX_PREVIEW

LogLevel = Literal["debug", "info", "warn", "error"]
SortField = Literal["created_at", "started_at", "completed_at", "duration_ms", "status", "pipeline"]

router = APIRouter(prefix="/executions", tags=["executions"])


@router.get("", response_model=ExecutionListResponse)
async def list_executions(
    services: ServicesDep,
    _: Viewer,
    status_: Annotated[ExecutionStatus | None, Query(alias="status")] = None,
    config_id: UUID | None = None,
    pipeline: str | None = None,
    namespace: str | None = None,
    layer: str | None = None,
    tag: str | None = None,
    trigger: str | None = None,
    parent_execution_id: UUID | None = None,
    from_: Annotated[
        datetime | None, Query(alias="from", description="created at or after (ISO 8601)")
    ] = None,
    to: Annotated[datetime | None, Query(description="created at or before (ISO 8601)")] = None,
    sort: SortField = "created_at",
    order: Literal["asc", "desc"] = "desc",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
) -> ExecutionListResponse:
    """Filter, sort and page executions; `total` counts every match."""
    page = await services.executions.list(
        ExecutionFilters(
            statuses=[status_] if status_ else None,
            config_id=str(config_id) if config_id else None,
            pipeline=pipeline,
            namespace=namespace,
            layer=layer,
            tag=tag,
            trigger=trigger,
            parent_execution_id=str(parent_execution_id) if parent_execution_id else None,
            created_from=as_utc(from_),
            created_to=as_utc(to),
        ),
        sort=sort,
        order=order,
        limit=limit,
        offset=offset,
    )
    return ExecutionListResponse(
        items=[ExecutionResponse.of(r, services.settings) for r in page.items],
        total=page.total,
        limit=limit,
        offset=offset,
    )


@router.get("/{execution_id}", response_model=ExecutionResponse, responses=NOT_FOUND)
async def get_execution(execution_id: ExecutionRef, services: ServicesDep, _: Viewer) -> ExecutionResponse:
    """Look up by execution id or by tag."""
    return ExecutionResponse.of(await services.executions.get(execution_id), services.settings)


@router.get("/{execution_id}/config", response_model=ExecutionConfigResponse, responses=NOT_FOUND)
async def get_execution_config(
    execution_id: ExecutionRef, services: ServicesDep, _: Viewer
) -> ExecutionConfigResponse:
    """The exact config snapshot the execution ran (later edits or deletion of the config do not change it)."""
    record = await services.executions.find(execution_id)
    return ExecutionConfigResponse(
        execution_id=UUID(record.id),
        config_id=UUID(record.config_id),
        config_version=record.config_version,
        config_hash=record.config_hash,
        yaml=record.config_yaml,
    )


@router.get("/{execution_id}/routes", response_model=ExecutionRoutesResponse, responses=NOT_FOUND)
async def get_execution_routes(
    execution_id: ExecutionRef, services: ServicesDep, _: Viewer
) -> ExecutionRoutesResponse:
    """Per-route runs: live from the workflow while running, stored once it is done."""
    record, routes = await services.executions.routes(execution_id)
    return ExecutionRoutesResponse(
        execution_id=UUID(record.id),
        status=record.status,  # type: ignore[arg-type]
        routes=routes,
    )


@router.get("/{execution_id}/routes/{route}/preview", response_model=NodePreviewResponse, responses=NOT_FOUND)
async def preview_route(
    execution_id: ExecutionRef,
    route: Annotated[str, Path(min_length=1, max_length=128)],
    services: ServicesDep,
    _: Viewer,
    limit: Annotated[int, Query(ge=1, le=MAX_PREVIEW)] = 50,
) -> NodePreviewResponse:
    """The first rows the route wrote (as `GET /api/runs/{id}/nodes/{node}/preview`)."""
    record = await services.executions.find(execution_id)
    preview = await services.node_data.preview(record, route, limit)
    return NodePreviewResponse(columns=preview.columns, rows=preview.rows)


@router.post(
    "/{execution_id}/cancel",
    response_model=ExecutionResponse,
    responses={
        **NOT_FOUND,
        202: {"model": ExecutionResponse, "description": "Cancellation requested, still stopping"},
        **CONFLICT,
        **UNAVAILABLE,
    },
)
async def cancel_execution(
    execution_id: ExecutionRef,
    services: ServicesDep,
    response: Response,
    _: Operator,
    mode: Annotated[
        Literal["immediate", "graceful"],
        Query(description="`immediate`: in-flight handlers are cancelled; `graceful`: they finish"),
    ] = "immediate",
) -> ExecutionResponse:
    """Cancel a running execution. Immediate (the default): in-flight handlers are cancelled through
    Sluice's heartbeats. Graceful: in-flight batches finish and their outputs are stored, nothing
    new starts. 200 once stopped, 202 if still stopping after SLUICE_CANCEL_WAIT."""
    record, finished = await services.executions.cancel(execution_id, graceful=mode == "graceful")
    if not finished:
        response.status_code = status.HTTP_202_ACCEPTED
    return ExecutionResponse.of(record, services.settings)


@router.post(
    "/{execution_id}/resume",
    response_model=ExecutionResponse,
    responses={**NOT_FOUND, **CONFLICT, **INVALID_CONFIG, **UNAVAILABLE, **IDEMPOTENT},
)
async def resume_execution(
    execution_id: ExecutionRef,
    request: Request,
    services: ServicesDep,
    principal: Operator,
    body: Annotated[ExecutionResumeRequest | None, Body()] = None,
    idempotency_key: IdempotencyKey = None,
) -> ExecutionResponse:
    """Start a new execution (`parent_execution_id` = this one, trigger `resume`) that does only
    what this failed, cancelled or interrupted execution left undone: routes that completed are
    `skipped` and their stored objects carried over; messages already handled are not handled
    again. Params carry over. 409 (with `status`) for a running or completed execution."""
    record = await services.executions.resume(
        execution_id,
        config=body.config if body else "snapshot",
        tag=body.tag if body else None,
        triggered_by=principal.name,
        execution_id=await reserved_execution(request, services, principal, idempotency_key),
    )
    return ExecutionResponse.of(record, services.settings)


@router.get(
    "/{execution_id}/logs",
    response_model=ExecutionLogsResponse,
    responses={
        **NOT_FOUND,
        200: {
            "content": {"text/event-stream": {}},
            "description": "JSON, or SSE with Accept: text/event-stream",
        },
    },
)
async def get_execution_logs(
    execution_id: ExecutionRef,
    request: Request,
    services: ServicesDep,
    _: Viewer,
    route: str | None = None,
    level: Annotated[LogLevel | None, Query(description="this level and above")] = None,
    since: Annotated[datetime | None, Query(description="at or after (ISO 8601)")] = None,
    after_id: Annotated[int, Query(ge=0, le=MAX_ID, description="only lines after this log id (paging)")] = 0,
    limit: Annotated[int, Query(ge=1, le=50_000)] = 10_000,
) -> ExecutionLogsResponse | StreamingResponse:
    """Handler logs and Sluice's lifecycle lines. With `Accept: text/event-stream`: `log` events,
    then `error` (failed runs) and `status`; an active run's stream stays open until it ends."""
    record = await services.executions.get(execution_id)
    if wants_sse(request):
        return log_stream(
            services,
            record,
            route=route,
            level=level,
            since=as_utc(since),
            log_data=lambda row: LogEntryResponse.model_validate(row).model_dump(mode="json"),
            status_data=lambda r: {
                "status": r.status,
                "rows_written": r.rows_written,
                "duration_ms": r.duration_ms,
            },
        )
    rows = await services.logs.fetch(
        record.id, route=route, level=level, since=as_utc(since), after_id=after_id, limit=limit
    )
    return ExecutionLogsResponse(
        execution_id=UUID(record.id),
        status=record.status,
        logs=[LogEntryResponse.model_validate(r) for r in rows],
    )


@router.get(
    "/{execution_id}/logs/export", responses={**NOT_FOUND, **LOG_EXPORT}, response_class=StreamingResponse
)
async def export_execution_logs(
    execution_id: ExecutionRef,
    services: ServicesDep,
    _: Viewer,
    format: Literal["text", "jsonl", "json"] = "text",
    route: str | None = None,
    level: LogLevel | None = None,
) -> StreamingResponse:
    """Download the logs as a file (streamed: exports of long runs stay small in memory)."""
    record = await services.executions.get(execution_id)
    return export_logs(services, record, format=format, route=route, level=level)
