"""Schema of a pipeline YAML.

Durations stay strings here and are checked by the validator, so a bad one becomes a coded
validation issue (E401) rather than an opaque schema error.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
STAGE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)*$"
Duration = str | int | float
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_HASH_MEMO = "_config_hash_memo"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class RetryConfig(_Strict):
    max_attempts: int = Field(default=3, ge=1, le=100)
    backoff: Duration = Field(default="1s", description="Delay before the first retry")
    backoff_coefficient: float = Field(default=2.0, ge=1.0, le=10.0)
    max_backoff: Duration = Field(default="1m", description="Upper bound of the delay between retries")


class InitMessage(_Strict):
    route: str = Field(min_length=1)
    payload: dict[str, Any] = Field(default_factory=dict)


class RouteConfig(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    handler: str = Field(min_length=1)
    stage: str | None = Field(default=None, description="Storage stage the route writes its objects to")
    next: list[str] = Field(default_factory=list)
    concurrency: int = Field(
        default=4, ge=1, le=500, description="Activities of this route in flight at once"
    )
    batch_size: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Messages handled by one activity. Unset: adaptive, 10 at first, then sized from "
        "the route's measured handler time to about a second of work (1-500; 100 for inline messages)",
    )
    retry: RetryConfig = Field(default_factory=RetryConfig)
    timeout: Duration = Field(default="10m", description="Limit for one activity (one batch)")
    heartbeat_timeout: Duration | None = Field(default=None)
    task_queue: str | None = Field(default=None, min_length=1, max_length=200)
    params: dict[str, Any] = Field(default_factory=dict)
    collect: bool = Field(
        default=False,
        description="Run once, after every upstream route has finished, with one summary message",
    )

    @field_validator("next", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        if value is None:
            return []
        return [value] if isinstance(value, str) else value


class ScheduleConfig(_Strict):
    """When a pipeline runs by itself: a Temporal Schedule owned by the config."""

    cron: str | None = Field(default=None, description="Cron expression, e.g. '0 6 * * *' or '@daily'")
    every: Duration | None = Field(default=None, description="Fixed interval instead of cron, e.g. '30s'")
    timezone: str = Field(default="UTC", description="IANA time zone the cron is read in")
    catchup_window: Duration = Field(
        default="1m", description="How late a missed run (server down) may still start"
    )
    overlap: Literal["skip", "buffer_one", "allow_all", "cancel_other"] = Field(
        default="skip", description="What happens when a run is due while the previous one still runs"
    )
    paused: bool = False

    def describe(self) -> str:
        """The schedule in a word, as scheduled runs' `trigger` shows it (`schedule:<this>`)."""
        return self.cron if self.cron else f"every {self.every}"


class PipelineConfig(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    namespace: str = Field(default="default", pattern=NAME_PATTERN)
    layer: str = Field(default="default", pattern=NAME_PATTERN)
    description: str | None = None
    init_message: InitMessage | None = None
    routes: list[RouteConfig] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    schedule: str | ScheduleConfig | None = Field(
        default=None, description="A cron string, or a mapping (cron or every, timezone, overlap, ...)"
    )
    on_failure: Literal["continue", "stop"] = Field(
        default="continue",
        description="When a batch fails for good: `continue` runs everything not downstream of it "
        "(what a resume then skips), `stop` cancels in-flight batches and starts nothing more",
    )

    def schedule_spec(self) -> ScheduleConfig | None:
        if self.schedule is None:
            return None
        return ScheduleConfig(cron=self.schedule) if isinstance(self.schedule, str) else self.schedule

    def route(self, name: str) -> RouteConfig | None:
        return next((r for r in self.routes if r.name == name), None)

    @classmethod
    def from_snapshot(cls, yaml_text: str) -> PipelineConfig:
        """Parse a stored config (already validated when it was saved): schema only, no handler imports."""
        return cls.model_validate(yaml.load(yaml_text, Loader=YAML_LOADER))

    def config_hash(self) -> str:
        """Hash of the normalised config: whitespace and key order in the YAML do not change it.

        Kept once computed (every run of a config asks its cached parse again). The memo names
        the object it was computed on: a `model_copy` copies `__dict__`, memo included, and may
        change fields, so a copy computes its own."""
        memo = self.__dict__.get(_HASH_MEMO)  # not a field: equality and dumps ignore it
        if memo is not None and memo[0] == id(self):
            return memo[1]
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        self.__dict__[_HASH_MEMO] = (id(self), digest)
        return digest


KNOWN_TOP_LEVEL = set(PipelineConfig.model_fields)
KNOWN_ROUTE_FIELDS = set(RouteConfig.model_fields)
