"""Runtime settings, read from SLUICE_* environment variables (and a .env file if present).

The API, the worker and the CLI read the same settings, so one environment describes a deployment.
"""

from __future__ import annotations

import ipaddress
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
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
    database_url: SecretStr | None = Field(default=None, description="Unset: SQLite file in data_dir")
    database_schema: str | None = Field(default=None, description="PostgreSQL schema (search_path)")
    storage_url: str | None = Field(default=None, description="file:///path or s3://bucket/prefix")
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=1, le=65535)
    heartbeat_timeout: str = Field(default="10s", description="Activity heartbeat timeout (cancel latency)")
    max_in_flight: int = Field(default=200, ge=1, le=1500, description="Activities in flight per execution")
    activities_per_run: int = Field(
        default=2000, ge=10, description="Activities before an execution continues as new"
    )
    cancel_wait: str = Field(default="15s", description="How long a cancel request waits for the run to stop")
    handler_log_level: str = Field(
        default="debug",
        pattern=r"^(?i:debug|info|warn|warning|error)$",
        description="Records handler code logs (ctx.log, its own loggers, libraries) are stored from",
    )
    log_format: Literal["text", "json"] = Field(default="text", description="API and worker stderr logs")
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="Worker: serve Prometheus metrics on this port (unset: off)"
    )
    temporal_metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Temporal SDK metrics (Prometheus) on this port (unset: off)",
    )
    tracing: Literal["none", "otlp", "console"] = Field(
        default="none", description="OpenTelemetry traces: otlp (OTEL_EXPORTER_OTLP_* settings) or console"
    )
    dry_run_timeout: str = Field(
        default="60s", description="How long a dry run may take before it answers 504 with what finished"
    )
    backfill_max_days: int = Field(
        default=366,
        ge=1,
        le=100_000,
        description="Most dates one backfill may cover (raise it for longer ranges)",
    )
    worker_max_concurrent_activities: int = Field(default=50, ge=1)
    handler_paths: str = Field(default="", description="Extra import paths for handler modules (os.pathsep)")
    handler_modules: str = Field(
        default="",
        description="Allowed handler module prefixes (comma list). Empty: any non-standard-library "
        "module without auth, built-ins only with auth on",
    )
    handler_check_timeout: str = Field(
        default="10s", description="How long config validation waits for a worker to check handlers"
    )
    read_roots: str = Field(
        default="",
        description="Where `read_files` may read (comma list of folders and s3://bucket[/prefix]); "
        "the data dir is always included",
    )
    worker_loss_budget: int = Field(
        default=10,
        ge=0,
        le=1000,
        description="Attempts of one batch that may be lost to dying or stopping workers, on top of the "
        "route's retry.max_attempts (which counts handler failures only)",
    )
    worker_shutdown_grace: str = Field(
        default="10s", description="On SIGTERM, how long in-flight batches may finish before the worker exits"
    )

    # -- who may call the API ------------------------------------------------------------------
    auth: Literal["none", "token", "oidc"] = Field(
        default="none", description="none (loopback only), token (API tokens) or oidc (JWTs)"
    )
    auth_allow_insecure: bool = Field(
        default=False, description="Serve beyond loopback without authentication (never in production)"
    )
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = Field(default=None, description="Default: the issuer's discovery document")
    oidc_roles_claim: str = Field(default="roles", description="Claim (dotted path) holding the role(s)")
    oidc_algorithms: str = "RS256,ES256"
    oidc_jwks_cache: str = Field(default="5m", description="How long fetched signing keys are reused")
    token: SecretStr | None = Field(
        default=None, description="The credential CLI commands send to a Sluice API (SLUICE_TOKEN)"
    )
    cors_origins: str = Field(default="", description="Origins allowed by CORS (comma list); empty: CORS off")
    idempotency_ttl: str = Field(default="24h", description="How long Idempotency-Key answers are kept")

    # -- how Sluice reaches Temporal -------------------------------------------------------------
    temporal_tls: bool = Field(default=False, description="Connect to Temporal over TLS")
    temporal_tls_ca_file: Path | None = Field(default=None, description="CA bundle for the server")
    temporal_tls_cert_file: Path | None = Field(default=None, description="Client certificate (mTLS)")
    temporal_tls_key_file: Path | None = Field(default=None, description="Client private key (mTLS)")
    temporal_tls_server_name: str | None = Field(default=None, description="Server name to verify")
    temporal_api_key: SecretStr | None = Field(default=None, description="Temporal Cloud API key")

    @field_validator(
        "heartbeat_timeout",
        "cancel_wait",
        "dry_run_timeout",
        "handler_check_timeout",
        "worker_shutdown_grace",
        "oidc_jwks_cache",
        "idempotency_ttl",
    )
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url.get_secret_value()
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

    def seconds(self, name: str) -> float:
        """A duration setting (`heartbeat_timeout`, `worker_shutdown_grace`, ...) in seconds."""
        return parse_duration(getattr(self, name)).total_seconds()

    @property
    def handler_module_prefixes(self) -> tuple[str, ...]:
        return tuple(p.strip().rstrip(".") for p in self.handler_modules.split(",") if p.strip())

    @property
    def readable_roots(self) -> list[str]:
        """Folders (resolved) and s3:// locations that `read_files` may read."""
        roots = [str(self.data_dir.resolve())]
        for item in (r.strip() for r in self.read_roots.split(",")):
            if item:
                roots.append(item.rstrip("/") if item.startswith("s3://") else str(Path(item).resolve()))
        return list(dict.fromkeys(roots))

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    def serves_loopback_only(self, host: str | None = None) -> bool:
        return is_loopback(host or self.api_host)

    def workflow_ui_url(self, workflow_id: str) -> str | None:
        """Where the Temporal Web UI shows a workflow (None without SLUICE_TEMPORAL_UI_URL)."""
        if not self.temporal_ui_url:
            return None
        return (
            f"{self.temporal_ui_url.rstrip('/')}/namespaces/{self.temporal_namespace}/workflows/{workflow_id}"
        )


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`; a wildcard (0.0.0.0, ::) or a name is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
