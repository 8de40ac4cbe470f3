"""/api/v1/configs: validate, create, list, read, update (versioned), delete, run."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Body, Path, Query, Request, Response, status

from sluice.api.auth import Editor, Operator, Viewer
from sluice.api.body import YAML_BODY_OPENAPI, read_yaml_body
from sluice.api.deps import IdempotencyKey, ServicesDep, reserved_execution
from sluice.api.responses import (
    BAD_REQUEST,
    CONFLICT,
    IDEMPOTENT,
    INVALID_CONFIG,
    NOT_FOUND,
    UNAVAILABLE,
)
from sluice.api.schemas import (
    MAX_INT,
    ConfigListResponse,
    ConfigResponse,
    ConfigVersionResponse,
    ExecutionResponse,
    ValidationReport,
)
from sluice.errors import InvalidArgumentError

router = APIRouter(prefix="/configs", tags=["configs"])


@router.post(
    "/validate",
    response_model=ValidationReport,
    responses=BAD_REQUEST,
    openapi_extra=YAML_BODY_OPENAPI,
)
async def validate_config(request: Request, services: ServicesDep, _: Editor) -> ValidationReport:
    """Validate a pipeline YAML without storing it; always 200 with the report. Handlers are
    imported and checked by a worker that polls each route's task queue (W301 when none answers)."""
    text = await read_yaml_body(request)
    return await services.configs.validate(text)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ConfigResponse,
    responses={**INVALID_CONFIG, **CONFLICT},
    openapi_extra=YAML_BODY_OPENAPI,
)
async def create_config(request: Request, services: ServicesDep, principal: Editor) -> ConfigResponse:
    """Store a new pipeline. Its identity is (namespace, layer, name): one that exists already is
    409 CONFIG_EXISTS naming its `config_id` (PUT /api/v1/configs/{id} adds a version)."""
    text = await read_yaml_body(request)
    record = await services.configs.create(text, created_by=principal.name)
    await services.schedules.sync(record)
    return ConfigResponse.model_validate(record)


@router.get("", response_model=ConfigListResponse)
async def list_configs(
    services: ServicesDep,
    _: Viewer,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
    name: Annotated[str | None, Query(max_length=128)] = None,
    namespace: Annotated[str | None, Query(max_length=128)] = None,
    layer: Annotated[str | None, Query(max_length=128)] = None,
) -> ConfigListResponse:
    page = await services.configs.list(
        limit=limit, offset=offset, name=name, namespace=namespace, layer=layer
    )
    return ConfigListResponse(
        items=[ConfigResponse.model_validate(r) for r in page.items],
        total=page.total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get("/{config_id}", response_model=ConfigResponse, responses=NOT_FOUND)
async def get_config(config_id: UUID, services: ServicesDep, _: Viewer) -> ConfigResponse:
    return ConfigResponse.model_validate(await services.configs.get(str(config_id)))


@router.put(
    "/{config_id}",
    response_model=ConfigResponse,
    responses={**NOT_FOUND, **INVALID_CONFIG, **CONFLICT},
    openapi_extra=YAML_BODY_OPENAPI,
)
async def update_config(
    config_id: UUID, request: Request, services: ServicesDep, principal: Editor
) -> ConfigResponse:
    """Store a new version; earlier versions stay readable under /versions."""
    await services.configs.get(str(config_id))
    text = await read_yaml_body(request)
    record = await services.configs.update(str(config_id), text, updated_by=principal.name)
    await services.schedules.sync(record)
    return ConfigResponse.model_validate(record)


@router.delete("/{config_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
async def delete_config(config_id: UUID, services: ServicesDep, _: Editor) -> Response:
    await services.configs.delete(str(config_id))
    await services.schedules.delete(str(config_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{config_id}/versions", response_model=list[ConfigVersionResponse], responses=NOT_FOUND)
async def list_config_versions(
    config_id: UUID, services: ServicesDep, _: Viewer
) -> list[ConfigVersionResponse]:
    return [ConfigVersionResponse.model_validate(v) for v in await services.configs.versions(str(config_id))]


@router.get("/{config_id}/versions/{version}", response_model=ConfigVersionResponse, responses=NOT_FOUND)
async def get_config_version(
    config_id: UUID, version: Annotated[int, Path(ge=1, le=MAX_INT)], services: ServicesDep, _: Viewer
) -> ConfigVersionResponse:
    return ConfigVersionResponse.model_validate(await services.configs.version(str(config_id), version))


@router.post(
    "/{config_id}/run",
    response_model=ExecutionResponse,
    responses={**NOT_FOUND, **INVALID_CONFIG, **UNAVAILABLE, **CONFLICT, **IDEMPOTENT},
)
async def run_config(
    config_id: UUID,
    request: Request,
    services: ServicesDep,
    principal: Operator,
    idempotency_key: IdempotencyKey = None,
    skip_init_message: bool = False,
    tag: Annotated[
        str | None, Query(description="Tag for the new execution (unique)", max_length=255)
    ] = None,
    init_payload_overrides: Annotated[dict[str, Any] | None, Body()] = None,
) -> ExecutionResponse:
    """Start a new pipeline execution from a stored configuration.

    Creates the execution record, starts its workflow (routes) on Temporal and publishes the
    init_message unless `skip_init_message`. The body is the `init_payload_overrides` object,
    merged (top-level keys) into the YAML's init payload, or `{"init_payload_overrides": {...},
    "params": {...}}` (either key optional): `params` override the pipeline's params for this run
    and fill `${param.NAME}` in the init payload.
    """
    overrides, params = init_payload_overrides, None
    if overrides is not None and overrides and set(overrides) <= {"init_payload_overrides", "params"}:
        inner = overrides.get("init_payload_overrides")
        params = overrides.get("params")
        if inner is not None and not isinstance(inner, dict):
            raise InvalidArgumentError("init_payload_overrides must be a JSON object")
        overrides = inner
    record = await services.executions.run_config(
        str(config_id),
        tag=tag,
        skip_init_message=skip_init_message,
        init_payload_overrides=overrides,
        params=params,
        triggered_by=principal.name,
        execution_id=await reserved_execution(request, services, principal, idempotency_key),
    )
    return ExecutionResponse.of(record, services.settings)
