"""Replays: execution replay (seed 001), detached replay (seed 004), and lineage."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from sluice.api.auth import Operator, Viewer
from sluice.api.deps import IdempotencyKey, ServicesDep, reserved_execution
from sluice.api.responses import CONFLICT, IDEMPOTENT, NOT_FOUND, UNAVAILABLE, Responses, error
from sluice.api.schemas import (
    DetachedReplayRequest,
    DetachedReplayResponse,
    ExecutionRef,
    ExecutionReplayRequest,
    ExecutionResponse,
    LineageEdge,
    LineageNode,
    LineageResponse,
)

router = APIRouter(tags=["replay"])

PreferHeader = Annotated[
    str | None,
    Header(
        max_length=200,
        description="`respond-async`: answer 202 with the new execution at once instead of after publishing; "
        "its `replay` counts appear on GET /api/v1/executions/{id} when publishing ends",
    ),
]
ACCEPTED: Responses = {
    202: {"model": ExecutionResponse, "description": "Prefer: respond-async: the execution, still publishing"}
}


def responds_async(prefer: str | None, response: Response) -> bool:
    """RFC 7240 `Prefer: respond-async`; marks the response 202 when honoured."""
    wanted = "respond-async" in [p.strip().split("=")[0].lower() for p in (prefer or "").split(",")]
    if wanted:
        response.status_code = 202
        response.headers["Preference-Applied"] = "respond-async"
    return wanted


ERRORS: Responses = {
    400: error("Bad request (unknown route or stage, empty stage, bad path)"),
    **NOT_FOUND,
    **CONFLICT,
    **UNAVAILABLE,
    **IDEMPOTENT,
}


@router.post(
    "/executions/{execution_id}/replay",
    response_model=ExecutionResponse,
    responses={**ERRORS, **ACCEPTED},
)
async def replay_execution(
    execution_id: ExecutionRef,
    body: ExecutionReplayRequest,
    request: Request,
    services: ServicesDep,
    principal: Operator,
    response: Response,
    idempotency_key: IdempotencyKey = None,
    prefer: PreferHeader = None,
) -> ExecutionResponse:
    """Replay a previous execution (id or tag): a new execution linked to its parent publishes the
    parent's stored objects of `from_stage` into `to_route`; messages flow downstream from there.
    With `config_id` the routes come from another pipeline (cross-pipeline replay). Returns once
    the objects are published."""
    started = await services.replays.replay_execution(
        execution_id,
        replay_source=body.replay_source,
        from_stage=body.from_stage,
        to_route=body.to_route,
        from_path=body.from_path,
        metadata=body.metadata,
        tag=body.tag,
        config_id=str(body.config_id) if body.config_id else None,
        triggered_by=principal.name,
        execution_id=await reserved_execution(request, services, principal, idempotency_key),
        wait=not responds_async(prefer, response),
    )
    return ExecutionResponse.of(started.record, services.settings)


@router.post("/replay", response_model=DetachedReplayResponse, responses={**ERRORS, **ACCEPTED})
async def detached_replay(
    body: DetachedReplayRequest,
    request: Request,
    services: ServicesDep,
    principal: Operator,
    response: Response,
    idempotency_key: IdempotencyKey = None,
    prefer: PreferHeader = None,
) -> DetachedReplayResponse | JSONResponse:
    """Replay stored outputs of an execution to any route, in a new execution; answers once every
    object is published (`.meta.json` sidecars are never published)."""
    out = await services.replays.detached(
        from_execution_id=str(body.from_execution_id),
        from_stage=body.from_stage,
        to_route=body.to_route,
        from_path=body.from_path,
        triggered_by=principal.name,
        execution_id=await reserved_execution(request, services, principal, idempotency_key),
        wait=not responds_async(prefer, response),
    )
    listing = out.listing
    if listing is None:  # respond-async: the execution now, its counts on it later
        return JSONResponse(
            status_code=202,
            content=ExecutionResponse.of(out.record, services.settings).model_dump(mode="json"),
            headers={"Preference-Applied": "respond-async"},
        )
    return DetachedReplayResponse(
        execution_id=UUID(out.record.id),
        from_execution_id=body.from_execution_id,
        from_stage=body.from_stage,
        from_path=body.from_path,
        to_route=body.to_route,
        to_queue=out.to_queue,
        objects_found=listing.objects_found,
        objects_published=listing.objects_published,
        objects_failed=listing.objects_failed,
        status="partial_failure" if (listing.objects_failed or listing.errors) else "publishing_complete",
        replay_batch_id=UUID((out.record.replay or {})["replay_batch_id"]),
        errors=listing.errors or None,
    )


@router.get(
    "/executions/{execution_id}/lineage",
    response_model=LineageResponse,
    responses=NOT_FOUND,
)
async def execution_lineage(
    execution_id: ExecutionRef,
    services: ServicesDep,
    _: Viewer,
    object_key: Annotated[
        str | None, Query(max_length=2048, description="Only the ancestry of this object")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=50_000)] = 10_000,
) -> LineageResponse:
    """The message graph of an execution (nodes: messages and objects with route and stage; edges:
    parent -> child). With `object_key`, the chain of inputs that produced that object, followed
    across replays into the executions that wrote them."""
    record = await services.executions.find(execution_id)
    if object_key:
        graph = await services.lineage.ancestry(record.id, object_key)
    else:
        graph = await services.lineage.execution_graph(record.id, limit=limit)
    return LineageResponse(
        execution_id=UUID(record.id),
        object_key=object_key,
        nodes=[LineageNode.of(n) for n in graph.nodes],
        edges=[LineageEdge(source=a, target=b) for a, b in graph.edges],
        truncated=graph.truncated,
    )
