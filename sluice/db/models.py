"""SQLModel tables. The Alembic migrations under sluice/migrations create exactly these."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from sluice.clock import utcnow
from sluice.workflow_io import RouteProgress


def _ts(**kw: Any) -> Any:
    return Field(sa_type=sa.DateTime(timezone=True), **kw)


class PipelineConfigRecord(SQLModel, table=True):
    __tablename__ = "pipeline_configs"
    # One pipeline per (namespace, layer, name): a new version is a PUT, never a second config.
    __table_args__ = (sa.Index("ix_pipeline_configs_pipeline", "namespace", "layer", "name", unique=True),)

    id: str = Field(primary_key=True, max_length=36)
    name: str = Field(max_length=128)
    namespace: str = Field(max_length=128)
    layer: str = Field(max_length=128)
    description: str | None = Field(default=None, sa_type=sa.Text)
    version: int = 1
    yaml: str = Field(sa_type=sa.Text)
    config_hash: str = Field(max_length=64)
    created_at: datetime = _ts(default_factory=utcnow)
    updated_at: datetime = _ts(default_factory=utcnow, index=True)
    created_by: str | None = Field(default=None, max_length=255)
    updated_by: str | None = Field(default=None, max_length=255)


class PipelineConfigVersion(SQLModel, table=True):
    __tablename__ = "pipeline_config_versions"
    __table_args__ = (sa.UniqueConstraint("config_id", "version", name="uq_config_version"),)

    id: int | None = Field(default=None, primary_key=True)
    config_id: str = Field(max_length=36, index=True)
    version: int
    yaml: str = Field(sa_type=sa.Text)
    config_hash: str = Field(max_length=64)
    created_at: datetime = _ts(default_factory=utcnow)
    created_by: str | None = Field(default=None, max_length=255)


class ExecutionRecord(SQLModel, table=True):
    __tablename__ = "executions"
    __table_args__ = (
        sa.Index("ix_executions_pipeline", "namespace", "layer", "pipeline", "created_at"),
        sa.Index("ix_executions_status_created", "status", "created_at"),
        sa.Index("ix_executions_started_at", "started_at"),
        sa.Index("ix_executions_completed_at", "completed_at"),
        sa.Index("ix_executions_duration_ms", "duration_ms"),
        sa.Index("ix_executions_trigger_created", "trigger", "created_at"),
        sa.Index("ix_executions_config_created", "config_id", "created_at"),
    )

    id: str = Field(primary_key=True, max_length=36)
    config_id: str = Field(max_length=36, index=True)
    config_version: int
    config_yaml: str = Field(sa_type=sa.Text)
    config_hash: str = Field(max_length=64)
    pipeline: str = Field(max_length=128)
    namespace: str = Field(max_length=128)
    layer: str = Field(max_length=128)
    status: str = Field(max_length=16)
    trigger: str = Field(default="manual", max_length=64)
    triggered_by: str | None = Field(default=None, max_length=255)
    tag: str | None = Field(default=None, max_length=255, unique=True)
    parent_execution_id: str | None = Field(default=None, max_length=36, index=True)
    replay_source: str | None = Field(default=None, max_length=16)
    workflow_id: str = Field(max_length=128)
    task_queue: str = Field(max_length=200)
    init_payload: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    replay: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    params: dict[str, Any] | None = Field(
        default=None,
        sa_type=sa.JSON,
        description="Run params given when it was started (override the config's)",
    )
    resume: dict[str, Any] | None = Field(
        default=None,
        sa_type=sa.JSON,
        description="For resumed runs: what was carried over and what ran again",
    )
    error: str | None = Field(default=None, sa_type=sa.Text)
    messages_processed: int = 0
    objects_written: int = 0
    rows_written: int | None = None
    created_at: datetime = _ts(default_factory=utcnow, index=True)
    started_at: datetime = _ts(default_factory=utcnow)
    completed_at: datetime | None = _ts(default=None)
    duration_ms: int | None = None


class RouteRunRecord(SQLModel, table=True):
    __tablename__ = "route_runs"
    __table_args__ = (sa.UniqueConstraint("execution_id", "route", name="uq_route_run"),)

    id: int | None = Field(default=None, primary_key=True)
    execution_id: str = Field(max_length=36, index=True)
    route: str = Field(max_length=128)
    position: int = 0
    status: str = Field(max_length=16)
    messages_in: int = 0
    messages_processed: int = 0
    messages_out: int = 0
    objects_written: int = 0
    rows_written: int | None = None
    messages_failed: int = 0
    retries: int = 0
    worker_losses: int = 0
    error: str | None = Field(default=None, sa_type=sa.Text)
    started_at: datetime | None = _ts(default=None)
    completed_at: datetime | None = _ts(default=None)
    duration_ms: int | None = None

    def to_progress(self) -> RouteProgress:
        return RouteProgress.model_validate(self, from_attributes=True)

    @staticmethod
    def values(execution_id: str, progress: RouteProgress) -> dict[str, Any]:
        """The one mapping from a route's progress onto its stored row (every column but `id`)."""
        return {"execution_id": execution_id, **progress.model_dump(exclude={"in_flight", "queued"})}

    def set_progress(self, progress: RouteProgress) -> None:
        for name, value in RouteRunRecord.values(self.execution_id, progress).items():
            setattr(self, name, value)


class ExecutionLogRecord(SQLModel, table=True):
    __tablename__ = "execution_logs"
    __table_args__ = (sa.Index("ix_execution_logs_exec_id", "execution_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    execution_id: str = Field(max_length=36)
    route: str | None = Field(default=None, max_length=128)
    level: str = Field(max_length=8)
    message: str = Field(sa_type=sa.Text)
    kind: str = Field(default="handler", max_length=16)
    correlation_id: str | None = Field(default=None, max_length=36)
    timestamp: datetime = _ts(default_factory=utcnow)
    event: str | None = Field(
        default=None, max_length=32, description="Lifecycle event type, e.g. execution.completed"
    )
    data: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)


class LineageRecord(SQLModel, table=True):
    __tablename__ = "message_lineage"

    correlation_id: str = Field(primary_key=True, max_length=36)
    execution_id: str = Field(max_length=36, index=True)
    parent_correlation_id: str | None = Field(default=None, max_length=36, index=True)
    route: str = Field(max_length=128)
    source_route: str | None = Field(default=None, max_length=128)
    stage: str | None = Field(default=None, max_length=255)
    object_key: str | None = Field(default=None, sa_type=sa.Text)
    replay_batch_id: str | None = Field(default=None, max_length=36)
    created_at: datetime = _ts(default_factory=utcnow)
    payload: dict[str, Any] | None = Field(
        default=None, sa_type=sa.JSON, description="The message's payload (what a resume sends again)"
    )
    processed_at: datetime | None = _ts(
        default=None, description="When its route's batch committed; NULL: never handled (resume runs it)"
    )


class ReplayLineageRecord(SQLModel, table=True):
    """The replayed objects one batch of a replay handled, in one row instead of one per object.

    A replay's messages derive from its batch and keys (`ReplayMessages`), so the row keeps only
    the keys; readers expand it into the message rows it stands for (`services.lineage`)."""

    __tablename__ = "replay_lineage"

    id: str = Field(primary_key=True, max_length=36, description="The first handled message's correlation id")
    execution_id: str = Field(max_length=36, index=True)
    replay_batch_id: str = Field(max_length=36)
    route: str = Field(max_length=128)
    stage: str = Field(max_length=255)
    clustered_ids: bool = Field(description="Message ids are ClusteredIds (else uuid5 derived ids)")
    object_keys: list[str] = Field(sa_type=sa.JSON)
    handled_at: datetime = _ts(default_factory=utcnow)


class BackfillRecord(SQLModel, table=True):
    """A backfill: one run per date of a range, started in date order by a BackfillWorkflow."""

    __tablename__ = "backfills"

    id: str = Field(primary_key=True, max_length=36)
    config_id: str = Field(max_length=36, index=True)
    config_version: int
    pipeline: str = Field(max_length=128)
    start_date: str = Field(max_length=10)
    end_date: str = Field(max_length=10)
    max_parallel: int = 1
    only_missing: bool = True
    status: str = Field(max_length=16, description="running, completed, failed, cancelled or interrupted")
    error: str | None = Field(default=None, sa_type=sa.Text)
    workflow_id: str = Field(max_length=128)
    created_at: datetime = _ts(default_factory=utcnow, index=True)
    created_by: str | None = Field(default=None, max_length=255)
    completed_at: datetime | None = _ts(default=None)


class BackfillRunRecord(SQLModel, table=True):
    """One date of a backfill and the run id reserved for it (the run's record exists once started)."""

    __tablename__ = "backfill_runs"

    backfill_id: str = Field(primary_key=True, max_length=36)
    run_date: str = Field(primary_key=True, max_length=10)
    execution_id: str = Field(max_length=36, unique=True)
    state: str = Field(default="pending", max_length=16, description="pending, started, skipped or failed")
    note: str | None = Field(default=None, sa_type=sa.Text)


class NodeProfileRecord(SQLModel, table=True):
    """A route's output profile in one finished execution (computed once, on first request)."""

    __tablename__ = "node_profiles"

    execution_id: str = Field(primary_key=True, max_length=36)
    route: str = Field(primary_key=True, max_length=128)
    profile: dict[str, Any] = Field(sa_type=sa.JSON)
    created_at: datetime = _ts(default_factory=utcnow)


class ApiTokenRecord(SQLModel, table=True):
    """An API token: only its SHA-256 is stored; the token itself is shown once, when created."""

    __tablename__ = "api_tokens"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128, unique=True)
    role: str = Field(max_length=16)
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = _ts(default_factory=utcnow)
    created_by: str | None = Field(default=None, max_length=255)
    last_used_at: datetime | None = _ts(default=None)
    expires_at: datetime | None = _ts(default=None)
    revoked_at: datetime | None = _ts(default=None)


class IdempotencyRecord(SQLModel, table=True):
    """An Idempotency-Key of a start request: a retry with the same key finds the same execution."""

    __tablename__ = "idempotency_keys"

    principal: str = Field(primary_key=True, max_length=255)
    key: str = Field(primary_key=True, max_length=255)
    request_hash: str = Field(max_length=64)
    execution_id: str = Field(max_length=36)
    created_at: datetime = _ts(default_factory=utcnow, index=True)
