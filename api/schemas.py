"""Request and response models. Field names, enums and status codes follow the seeds."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from sluice.db.models import ExecutionRecord, PipelineConfigRecord, PipelineConfigVersion, as_utc
from sluice.settings import Settings
from sluice.validation import ValidationIssue, ValidationReport
from sluice.workflow_io import RouteProgress

ExecutionStatus = Literal["running", "completed", "failed", "cancelled", "interrupted"]
ReplaySource = Literal["storage", "lineage", "manual"]


class ErrorResponse(BaseModel):
    """Standard error response matching FastAPI HTTPException format."""

    detail: str = Field(description="Error message (matches FastAPI HTTPException)")
    error_code: str | None = None
    correlation_id: str | None = None
    timestamp: datetime = Field(description="Error timestamp")


class ValidationErrorResponse(ErrorResponse, ValidationReport):
    """400 for an invalid config: the ErrorResponse fields plus the full validation report."""


class ValidationIssueResponse(ValidationIssue):
    pass


class ValidationReportResponse(ValidationReport):
    pass


class ConfigYamlBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    yaml: str = Field(description="The pipeline YAML", max_length=1_048_576)


class ConfigResponse(BaseModel):
    id: UUID
    name: str
    namespace: str
    layer: str
    description: str | None
    version: int
    config_hash: str
    yaml: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, r: PipelineConfigRecord) -> ConfigResponse:
        return cls(
            id=UUID(r.id),
            name=r.name,
            namespace=r.namespace,
            layer=r.layer,
            description=r.description,
            version=r.version,
            config_hash=r.config_hash,
            yaml=r.yaml,
            created_at=as_utc(r.created_at),
            updated_at=as_utc(r.updated_at),
        )


class ConfigListResponse(BaseModel):
    items: list[ConfigResponse]
    total: int
    limit: int
    offset: int


class ConfigVersionResponse(BaseModel):
    config_id: UUID
    version: int
    config_hash: str
    yaml: str
    created_at: datetime

    @classmethod
    def of(cls, v: PipelineConfigVersion) -> ConfigVersionResponse:
        return cls(
            config_id=UUID(v.config_id),
            version=v.version,
            config_hash=v.config_hash,
            yaml=v.yaml,
            created_at=as_utc(v.created_at),
        )


class ExecutionResponse(BaseModel):
    """Pipeline execution response. Storage paths use the execution id (UUID v7) directly."""

    id: UUID = Field(description="Execution UUID (used for storage paths)")
    config_id: UUID = Field(description="Configuration ID")
    status: ExecutionStatus = Field(description="Current status")
    started_at: datetime = Field(description="Start timestamp")
    completed_at: datetime | None = None
    parent_execution_id: UUID | None = None
    replay_source: ReplaySource | None = None
    tag: str | None = None
    # Sluice additions (clients of the seed ignore them):
    config_version: int
    pipeline: str
    namespace: str
    layer: str
    trigger: str
    error: str | None = None
    duration_ms: int | None = None
    messages_processed: int = 0
    objects_written: int = 0
    rows_written: int | None = None
    created_at: datetime
    workflow_id: str
    temporal_ui_url: str | None = None

    @classmethod
    def of(cls, r: ExecutionRecord, settings: Settings) -> ExecutionResponse:
        base = settings.ui_base()
        return cls(
            id=UUID(r.id),
            config_id=UUID(r.config_id),
            status=r.status,  # type: ignore[arg-type]
            started_at=as_utc(r.started_at),
            completed_at=as_utc(r.completed_at),
            parent_execution_id=UUID(r.parent_execution_id) if r.parent_execution_id else None,
            replay_source=r.replay_source,  # type: ignore[arg-type]
            tag=r.tag,
            config_version=r.config_version,
            pipeline=r.pipeline,
            namespace=r.namespace,
            layer=r.layer,
            trigger=r.trigger,
            error=r.error,
            duration_ms=r.duration_ms,
            messages_processed=r.messages_processed,
            objects_written=r.objects_written,
            rows_written=r.rows_written,
            created_at=as_utc(r.created_at),
            workflow_id=r.workflow_id,
            temporal_ui_url=(
                f"{base}/namespaces/{settings.temporal_namespace}/workflows/{r.workflow_id}" if base else None
            ),
        )


class RouteRunResponse(BaseModel):
    route: str
    status: str
    messages_in: int
    messages_processed: int
    messages_out: int
    objects_written: int
    rows_written: int | None
    retries: int
    in_flight: int
    queued: int
    error: str | None
    started_at: datetime | None
    completed_at: datetime | None
    duration_ms: int | None

    @classmethod
    def of(cls, p: RouteProgress) -> RouteRunResponse:
        data: dict[str, Any] = p.model_dump(exclude={"position"})
        return cls(**data, duration_ms=p.duration_ms)


class ExecutionRoutesResponse(BaseModel):
    execution_id: UUID
    status: ExecutionStatus
    routes: list[RouteRunResponse]
