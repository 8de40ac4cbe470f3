"""/api/v1/runs: seed 003's Runs API (with seed 002's node_runs) over the same service layer as
the executions API. Only the vocabulary differs: statuses (`success`, `failed`, ...) and error
codes (INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse, StreamingResponse

from sluice.api.auth import Operator, Viewer
from sluice.api.deps import IdempotencyKey, ServicesDep, reserved_execution
from sluice.api.logs import export_logs, log_stream, wants_sse
from sluice.api.responses import IDEMPOTENT, LOG_EXPORT, UNAVAILABLE, Responses, error
from sluice.api.schemas import (
    EXECUTION_STATUSES,
    ExecutionRef,
    NodeRunResponse,
    RunCancelledResponse,
    RunCreatedResponse,
    RunCreateRequest,
    RunDetailResponse,
    RunListResponse,
    RunLogEntry,
    RunLogsResponse,
    RunResponse,
    run_status,
)
from sluice.clock import as_utc
from sluice.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError, SluiceError
from sluice.pipeline_config import NAME_PATTERN
from sluice.services.executions import ExecutionFilters

router = APIRouter(prefix="/runs", tags=["runs"])

SORTS = {"created_at", "started_at", "finished_at", "duration_ms"}
TRIGGER = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}$")
ERRORS: Responses = {400: error("INVALID_ARGUMENT"), 404: error("NOT_FOUND")}


@asynccontextmanager
async def seed_codes() -> AsyncIterator[None]:
    """Translate domain errors into the seed's three codes."""
    try:
        yield
    except SluiceError as exc:
        if exc.status_code == 404:
            raise NotFoundError(exc.detail) from None
        if exc.status_code == 409:
            raise AlreadyExistsError(exc.detail) from None
        if exc.status_code in (400, 422):
            raise InvalidArgumentError(exc.detail, extra=exc.extra) from None
        raise


@router.get("", response_model=RunListResponse, responses={400: ERRORS[400]})
async def list_runs(request: Request, services: ServicesDep, _: Viewer) -> RunListResponse:
    q = request.query_params
    known = {"namespace", "layer", "pipeline", "status", "from", "to", "sort", "order", "limit", "offset"}
    unknown = sorted(set(q) - known)
    if unknown:
        raise InvalidArgumentError(f"unknown query parameter(s): {', '.join(unknown)}")
    run_status = q.get("status")
    if run_status is not None and run_status not in EXECUTION_STATUSES:
        raise InvalidArgumentError(f"status must be one of {', '.join(EXECUTION_STATUSES)}")
    sort = q.get("sort", "created_at")
    if sort not in SORTS:
        raise InvalidArgumentError(f"sort must be one of {', '.join(sorted(SORTS))}")
    order = q.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidArgumentError("order must be asc or desc")
    limit = _int(q.get("limit", "50"), "limit", 1, 200)
    offset = _int(q.get("offset", "0"), "offset", 0, 10**9)
    filters = ExecutionFilters(
        statuses=EXECUTION_STATUSES[run_status] if run_status else None,
        namespace=q.get("namespace"),
        layer=q.get("layer"),
        pipeline=q.get("pipeline"),
        created_from=_time(q.get("from"), "from"),
        created_to=_time(q.get("to"), "to"),
    )
    page = await services.executions.list(filters, sort=sort, order=order, limit=limit, offset=offset)
    return RunListResponse(runs=[RunResponse.of(r) for r in page.items], total=page.total)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RunCreatedResponse,
    responses={**ERRORS, **UNAVAILABLE, **IDEMPOTENT},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": RunCreateRequest.model_json_schema()}},
        }
    },
)
async def create_run(
    request: Request, services: ServicesDep, principal: Operator, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    """Trigger the latest config of `namespace.layer.pipeline`; 202, the run executes asynchronously."""
    try:
        body = json.loads(await request.body() or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidArgumentError("body must be a JSON object") from None
    if not isinstance(body, dict):
        raise InvalidArgumentError("body must be a JSON object with namespace, layer and pipeline")
    missing = [f for f in ("namespace", "layer", "pipeline") if not body.get(f)]
    if missing:
        raise InvalidArgumentError(f"missing required field(s): {', '.join(missing)}")
    for name in ("namespace", "layer", "pipeline"):
        if not isinstance(body[name], str) or not re.match(NAME_PATTERN, body[name]):
            raise InvalidArgumentError(f"invalid {name} {body[name]!r}")
    trigger = body.get("trigger", "manual")
    if not isinstance(trigger, str) or not TRIGGER.match(trigger):
        raise InvalidArgumentError("trigger must be 1-64 characters of letters, digits and _.:/-")
    execution_id = await reserved_execution(request, services, principal, idempotency_key)
    async with seed_codes():
        config = await services.configs.latest_for_pipeline(
            body["namespace"], body["layer"], body["pipeline"]
        )
        record = await services.executions.run_config(
            config.id,
            trigger=trigger,
            triggered_by=principal.name,
            execution_id=execution_id,
            params=body.get("params"),
        )
    return JSONResponse(status_code=202, content={"run_id": record.id, "status": "pending"})


@router.get("/{run_id}", response_model=RunDetailResponse, responses={404: ERRORS[404]})
async def get_run(run_id: ExecutionRef, services: ServicesDep, _: Viewer) -> RunDetailResponse:
    async with seed_codes():
        record, routes = await services.executions.routes(run_id)
    detail = RunDetailResponse.of(record)
    detail.node_runs = [NodeRunResponse.of(record.id, p) for p in routes]
    detail.temporal_ui_url = services.settings.workflow_ui_url(record.workflow_id)
    return detail


@router.post(
    "/{run_id}/cancel",
    response_model=RunCancelledResponse,
    responses={
        404: ERRORS[404],
        409: error("ALREADY_EXISTS: run is terminal"),
        **UNAVAILABLE,
    },
)
async def cancel_run(run_id: ExecutionRef, services: ServicesDep, _: Operator) -> RunCancelledResponse:
    async with seed_codes():
        record, _ = await services.executions.cancel(run_id)
    return RunCancelledResponse(run_id=record.id, status="cancelled")


@router.get(
    "/{run_id}/logs",
    response_model=RunLogsResponse,
    responses={404: ERRORS[404], 200: {"content": {"text/event-stream": {}}}},
)
async def get_run_logs(
    run_id: ExecutionRef, request: Request, services: ServicesDep, _: Viewer
) -> RunLogsResponse | StreamingResponse:
    """JSON by default; SSE (`log`, `status`, `error` events) with `Accept: text/event-stream`."""
    async with seed_codes():
        record = await services.executions.get(run_id)
    if wants_sse(request):
        return log_stream(
            services,
            record,
            route=None,
            level=None,
            since=None,
            log_data=lambda row: RunLogEntry.model_validate(row).model_dump(mode="json"),
            status_data=lambda r: {
                "status": run_status(r.status),
                "rows_written": r.rows_written,
                "duration_ms": r.duration_ms,
            },
        )
    rows = await services.logs.fetch(record.id)
    return RunLogsResponse(
        logs=[RunLogEntry.model_validate(r) for r in rows], status=run_status(record.status)
    )


@router.get(
    "/{run_id}/logs/export", responses={404: ERRORS[404], **LOG_EXPORT}, response_class=StreamingResponse
)
async def export_run_logs(
    run_id: ExecutionRef, services: ServicesDep, _: Viewer, format: Literal["text", "jsonl", "json"] = "text"
) -> StreamingResponse:
    async with seed_codes():
        record = await services.executions.get(run_id)
    return export_logs(services, record, format=format, route=None, level=None)


def _int(value: str, name: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise InvalidArgumentError(f"{name} must be an integer") from None
    if not low <= number <= high:
        raise InvalidArgumentError(f"{name} must be between {low} and {high}")
    return number


def _time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgumentError(f"{name} must be an ISO 8601 timestamp") from None
    return as_utc(parsed)
