"""/api/v1/executions: read by id or tag, per-route progress, cancel."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Response, status

from api.deps import ServicesDep
from api.schemas import ErrorResponse, ExecutionResponse, ExecutionRoutesResponse, RouteRunResponse

router = APIRouter(prefix="/api/v1/executions", tags=["executions"])

NOT_FOUND = {404: {"model": ErrorResponse, "description": "Resource not found"}}


@router.get("/{execution_id}", response_model=ExecutionResponse, responses=NOT_FOUND)
async def get_execution(execution_id: str, services: ServicesDep) -> ExecutionResponse:
    """Look up by execution id or by tag."""
    return ExecutionResponse.of(await services.executions.get(execution_id), services.settings)


@router.get("/{execution_id}/routes", response_model=ExecutionRoutesResponse, responses=NOT_FOUND)
async def get_execution_routes(execution_id: str, services: ServicesDep) -> ExecutionRoutesResponse:
    """Per-route runs: live from the workflow while running, stored once it is done."""
    record, routes = await services.executions.routes(execution_id)
    return ExecutionRoutesResponse(
        execution_id=UUID(record.id),
        status=record.status,  # type: ignore[arg-type]
        routes=[RouteRunResponse.of(r) for r in routes],
    )


@router.post(
    "/{execution_id}/cancel",
    response_model=ExecutionResponse,
    responses={
        **NOT_FOUND,
        202: {"model": ExecutionResponse, "description": "Cancellation requested, still stopping"},
        409: {"model": ErrorResponse, "description": "Execution already finished"},
        503: {"model": ErrorResponse, "description": "Temporal not reachable"},
    },
)
async def cancel_execution(execution_id: str, services: ServicesDep, response: Response) -> ExecutionResponse:
    """Cancel a running execution. In-flight handlers are cancelled through Sluice's heartbeats;
    200 once stopped, 202 if still stopping after SLUICE_CANCEL_WAIT."""
    record, finished = await services.executions.cancel(execution_id)
    if not finished:
        response.status_code = status.HTTP_202_ACCEPTED
    return ExecutionResponse.of(record, services.settings)
