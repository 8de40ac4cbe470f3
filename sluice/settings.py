"""Runtime settings, read from SLUICE_* environment variables (and a .env file if present).

The API, the worker and the CLI read the same settings, so one environment describes a deployment.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sluice.durations import parse_duration


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SLUICE_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default=Path(".sluice"), description="Where the embedded stack keeps its state")
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_ui_url: str | None = Field(
        default=None, description="Base URL of the Temporal Web UI, for links"
    )
    task_queue: str = "sluice"
    worker_task_queues: str = Field(default="", description="Extra queues this worker polls (comma list)")
    database_url: str | None = Field(default=None, description="Unset: SQLite file in data_dir")
    database_schema: str | None = Field(default=None, description="PostgreSQL schema (search_path)")
    storage_url: str | None = Field(default=None, description="file:///path or s3://bucket/prefix")
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=1, le=65535)
    heartbeat_timeout: str = Field(default="10s", description="Activity heartbeat timeout (cancel latency)")
    max_in_flight: int = Field(default=200, ge=1, le=1500, description="Activities in flight per execution")
    activities_per_run: int = Field(
        default=2000, ge=10, description="Activities before an execution continues as new"
    )
    cancel_wait: str = Field(default="15s", description="How long a cancel request waits for the run to stop")
    worker_max_concurrent_activities: int = Field(default=50, ge=1)
    handler_paths: str = Field(default="", description="Extra import paths for handler modules (os.pathsep)")
    handler_modules: str = Field(
        default="", description="Allowed handler module prefixes (comma list); empty allows any module"
    )

    @field_validator("heartbeat_timeout", "cancel_wait")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'sluice.db').resolve()}"

    @cached_property
    def resolved_storage_url(self) -> str:
        if self.storage_url:
            return self.storage_url
        return (self.data_dir / "storage").resolve().as_uri()

    @property
    def heartbeat_seconds(self) -> float:
        return parse_duration(self.heartbeat_timeout).total_seconds()

    @property
    def cancel_wait_seconds(self) -> float:
        return parse_duration(self.cancel_wait).total_seconds()

    def workflow_ui_url(self, workflow_id: str) -> str | None:
        """Where the Temporal Web UI shows a workflow (None without SLUICE_TEMPORAL_UI_URL)."""
        if not self.temporal_ui_url:
            return None
        return (
            f"{self.temporal_ui_url.rstrip('/')}/namespaces/{self.temporal_namespace}/workflows/{workflow_id}"
        )
