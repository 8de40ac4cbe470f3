"""/api/v1/configs: validate, create, list, read, update (versioned), delete, run."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Body, Path, Query, Request, Response, status

from sluice.api.body import YAML_BODY_OPENAPI, read_yaml_body
from sluice.api.deps import ServicesDep
from sluice.api.schemas import (
    ConfigListResponse,
    ConfigResponse,
    ConfigVersionResponse,
    ErrorResponse,
    ExecutionResponse,
    ValidationErrorResponse,
    ValidationReport,
)

router = APIRouter(prefix="/configs", tags=["configs"])

NOT_FOUND = {404: {"model": ErrorResponse, "description": "Resource not found"}}
INVALID = {400: {"model": ValidationErrorResponse, "description": "Validation failed"}}
UNAVAILABLE = {503: {"model": ErrorResponse, "description": "Temporal not reachable"}}


@router.post("/validate", response_model=ValidationReport, openapi_extra=YAML_BODY_OPENAPI)
async def validate_config(request: Request, services: ServicesDep) -> ValidationReport:
    """Validate a pipeline YAML without storing it; always 200 with the report."""
    text = await read_yaml_body(request)
    return services.configs.validate(text)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ConfigResponse,
    responses={**INVALID},
    openapi_extra=YAML_BODY_OPENAPI,
)
async def create_config(request: Request, services: ServicesDep) -> ConfigResponse:
    text = await read_yaml_body(request)
    return ConfigResponse.model_validate(await services.configs.create(text))


@router.get("", response_model=ConfigListResponse)
async def list_configs(
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
    name: str | None = None,
    namespace: str | None = None,
    layer: str | None = None,
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
async def get_config(config_id: UUID, services: ServicesDep) -> ConfigResponse:
    return ConfigResponse.model_validate(await services.configs.get(str(config_id)))


@router.put(
    "/{config_id}",
    response_model=ConfigResponse,
    responses={**NOT_FOUND, **INVALID},
    openapi_extra=YAML_BODY_OPENAPI,
)
async def update_config(config_id: UUID, request: Request, services: ServicesDep) -> ConfigResponse:
    """Store a new version; earlier versions stay readable under /versions."""
    await services.configs.get(str(config_id))
    text = await read_yaml_body(request)
    return ConfigResponse.model_validate(await services.configs.update(str(config_id), text))


@router.delete("/{config_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
async def delete_config(config_id: UUID, services: ServicesDep) -> Response:
    await services.configs.delete(str(config_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{config_id}/versions", response_model=list[ConfigVersionResponse], responses=NOT_FOUND)
async def list_config_versions(config_id: UUID, services: ServicesDep) -> list[ConfigVersionResponse]:
    return [ConfigVersionResponse.model_validate(v) for v in await services.configs.versions(str(config_id))]


@router.get("/{config_id}/versions/{version}", response_model=ConfigVersionResponse, responses=NOT_FOUND)
async def get_config_version(
    config_id: UUID, version: Annotated[int, Path(ge=1)], services: ServicesDep
) -> ConfigVersionResponse:
    return ConfigVersionResponse.model_validate(await services.configs.version(str(config_id), version))


@router.post(
    "/{config_id}/run",
    response_model=ExecutionResponse,
    responses={
        **NOT_FOUND,
        **INVALID,
        **UNAVAILABLE,
        409: {"model": ErrorResponse, "description": "Tag in use"},
    },
)
async def run_config(
    config_id: UUID,
    services: ServicesDep,
    skip_init_message: bool = False,
    tag: Annotated[str | None, Query(description="Tag for the new execution (unique)")] = None,
    init_payload_overrides: Annotated[dict[str, Any] | None, Body()] = None,
) -> ExecutionResponse:
    """Start a new pipeline execution from a stored configuration.

    Creates the execution record, starts its workflow (routes) on Temporal and publishes the
    init_message unless `skip_init_message`. The body is the `init_payload_overrides` object,
    merged (top-level keys) into the YAML's init payload; `{"init_payload_overrides": {...}}` is
    accepted too.
    """
    overrides = init_payload_overrides
    if overrides is not None and set(overrides) == {"init_payload_overrides"}:
        inner = overrides["init_payload_overrides"]
        overrides = inner if isinstance(inner, dict) else None
    record = await services.executions.run_config(
        str(config_id), tag=tag, skip_init_message=skip_init_message, init_payload_overrides=overrides
    )
    return ExecutionResponse.of(record, services.settings)
