"""Models that cross Temporal history: workflow input/state, activity tasks and results.

Kept free of I/O imports so the workflow sandbox can pass this module through. Everything here is
small by construction: object bytes never appear, and large message sets are spilled to storage
and referenced by `SpillRef`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, computed_field, field_serializer
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

from sluice.clock import UtcDatetime, duration_ms
from sluice.messages import Message
from sluice.pipeline_config import PipelineConfig, RouteConfig

WORKFLOW_NAME = "ExecutionWorkflow"
REPLAY_PUBLISHED_UPDATE = "replay_published"
PROGRESS_QUERY = "progress"
RUN_ROUTE = "sluice.run_route"
FINALIZE_EXECUTION = "sluice.finalize_execution"
SPILL_MESSAGES = "sluice.spill_messages"
LIST_REPLAY_OBJECTS = "sluice.list_replay_objects"
LIST_REPLAY_KEYS = "sluice.list_replay_keys"
PUBLISH_REPLAY_CHUNK = "sluice.publish_replay_chunk"
RECORD_REPLAY_PUBLISHED = "sluice.record_replay_published"
PUBLISH_REPLAY_KEYS = "sluice.publish_replay_keys"
MAX_REPLAY_ERRORS = 50  # unpublishable objects a replay reports by name
PREPARE_RESUME = "sluice.prepare_resume"
STOP_GRACEFULLY_SIGNAL = "stop_gracefully"
# Sent by a streamed replay's publishing activity: the keys published so far (a SpillRef).
REPLAY_KEYS_SIGNAL = "replay_keys_published"
HANDLER_CHECK_WORKFLOW = "HandlerCheckWorkflow"
BACKFILL_WORKFLOW = "BackfillWorkflow"
BACKFILL_PROGRESS_QUERY = "backfill_progress"
PREPARE_BACKFILL_RUN = "sluice.prepare_backfill_run"
FINISH_BACKFILL = "sluice.finish_backfill"
SCHEDULED_RUN_WORKFLOW = "ScheduledRunWorkflow"
PREPARE_SCHEDULED_RUN = "sluice.prepare_scheduled_run"
CHECK_HANDLERS = "sluice.check_handlers"

RouteStatus = Literal["pending", "running", "completed", "failed", "cancelled", "skipped"]


_WORKFLOW_ID_PREFIX = "sluice-exec-"


def workflow_id_for(execution_id: str) -> str:
    return f"{_WORKFLOW_ID_PREFIX}{execution_id}"


def execution_id_of(workflow_id: str) -> str:
    return workflow_id.removeprefix(_WORKFLOW_ID_PREFIX)


def backfill_workflow_id(backfill_id: str) -> str:
    return f"sluice-backfill-{backfill_id}"


_SCHEDULE_ID_PREFIX = "sluice-schedule-"


def schedule_id_for(config_id: str) -> str:
    return f"{_SCHEDULE_ID_PREFIX}{config_id}"


def config_id_of_schedule(schedule_id: str) -> str | None:
    return (
        schedule_id.removeprefix(_SCHEDULE_ID_PREFIX) if schedule_id.startswith(_SCHEDULE_ID_PREFIX) else None
    )


class ReplayKeys(BaseModel):
    """What turns a replay's published keys into its messages (see `sluice.replay_messages`)."""

    replay_batch_id: str
    stage: str
    metadata: dict[str, Any] | None = None
    # True: message ids sort with the replay batch (`sluice.ids.ClusteredIds`); False: uuid5 ids
    # (`derived_id`) of replays started before.
    clustered_ids: bool = False


class SpillRef(BaseModel):
    """Messages stored as JSONL pages `{prefix}{page:06d}.jsonl` of `page_size` lines each.

    With `replay`, the lines are a replay's keys (JSON strings) and each batch derives their
    messages: a replay stores nothing per object before its route runs."""

    prefix: str
    total: int
    page_size: int
    offset: int = 0
    replay: ReplayKeys | None = None

    @property
    def page_count(self) -> int:
        """Pages written (the last may be partial)."""
        return -(-self.total // self.page_size)


class MessageBatch(BaseModel):
    """Either inline messages or one slice of one spill page."""

    messages: list[Message] | None = None
    spill: SpillRef | None = None
    page: int = 0
    start: int = 0
    count: int = 0

    @property
    def size(self) -> int:
        return len(self.messages) if self.messages is not None else self.count


class RoutedOutput(BaseModel):
    route: str
    messages: list[Message] | None = None
    spill: SpillRef | None = None

    @property
    def size(self) -> int:
        return len(self.messages) if self.messages is not None else (self.spill.total if self.spill else 0)


def config_wire_form(config: BaseModel) -> dict[str, Any]:
    """A config as it crosses history: only what differs from the defaults, which validation fills
    back in. Every route activity carries its route: spelled out, a route's defaults were 250 of
    the 730 bytes of a one-message batch's input. Inputs written whole (before this) read the same."""
    return config.model_dump(mode="json", exclude_defaults=True)


class RouteTask(BaseModel):
    """One batch for one route: only that route's config travels, not the whole pipeline."""

    execution_id: str
    route: RouteConfig
    pipeline: str = Field(default="", description="The pipeline's name (metrics labels)")
    params: dict[str, Any] = Field(default_factory=dict, description="Pipeline params")
    config_hash: str
    batch: MessageBatch
    spill_page_sizes: dict[str, int] = Field(default_factory=dict)
    read_executions: list[str] = Field(default_factory=list)
    # True: the messages the batch sends get ids that sort with the execution (`ClusteredIds`).
    # Batches scheduled before keep uuid5 ids, so a retry re-derives what its first attempt did.
    clustered_ids: bool = False

    @field_serializer("route")
    def _route_wire_form(self, route: RouteConfig) -> dict[str, Any]:
        return config_wire_form(route)


class RouteResult(BaseModel):
    processed: int
    objects_written: int = 0
    rows_written: int | None = None
    attempt: int = 1
    handler_failures: int | None = Field(
        default=None, description="Attempts the handler failed; the rest of attempt - 1 were worker losses"
    )
    outputs: list[RoutedOutput] = Field(default_factory=list)
    seconds: float | None = Field(
        default=None, description="Time the handler spent on the batch's messages (sizes adaptive batches)"
    )

    def spent(self) -> tuple[int, int]:
        """(handler retries, worker losses) behind this result."""
        retried = max(self.attempt - 1, 0)
        if self.handler_failures is None:  # results of workers before this count existed
            return retried, 0
        return self.handler_failures, max(retried - self.handler_failures, 0)

    @property
    def messages_out(self) -> int:
        return sum(o.size for o in self.outputs)


class AttemptLedger(BaseModel):
    """What the attempts of one batch spent so far, carried from attempt to attempt in heartbeat
    details: Temporal retries every failure alike, Sluice counts only the handler's against
    `retry.max_attempts` (a lost worker spends the separate worker-loss budget)."""

    handler_failures: int = 0
    processed: int = 0

    def losses(self, attempt: int) -> int:
        return max(attempt - 1 - self.handler_failures, 0)


class SpillTask(BaseModel):
    execution_id: str
    route: str
    messages: list[Message]
    page_size: int


class RouteProgress(BaseModel):
    """A route's progress in one execution: the workflow's live state, the stored route run and
    the API's per-route answer are this one model."""

    route: str
    position: int = 0
    status: RouteStatus = "pending"
    messages_in: int = 0
    messages_processed: int = 0
    messages_out: int = 0
    objects_written: int = 0
    rows_written: int | None = None
    messages_failed: int = Field(default=0, description="Messages of batches that failed for good")
    retries: int = Field(default=0, description="Batch attempts the handler failed and that were retried")
    worker_losses: int = Field(
        default=0, description="Batch attempts lost with their worker (no retry spent)"
    )
    in_flight: int = 0
    queued: int = 0
    error: str | None = None
    started_at: UtcDatetime | None = None
    completed_at: UtcDatetime | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def duration_ms(self) -> int | None:
        return duration_ms(self.started_at, self.completed_at)


class QueueEntry(BaseModel):
    messages: list[Message] | None = None
    spill: SpillRef | None = None

    @property
    def size(self) -> int:
        if self.messages is not None:
            return len(self.messages)
        return self.spill.total - self.spill.offset if self.spill else 0


class CarriedState(BaseModel):
    """What a continued-as-new run picks up from its predecessor."""

    started_at: datetime
    routes: list[RouteProgress]
    queues: dict[str, list[QueueEntry]]
    collect_pending: dict[str, int] = Field(default_factory=dict)
    singles: dict[str, list[MessageBatch]] = Field(
        default_factory=dict, description="One-message batches split off failed batches, still to run"
    )
    runs: int = 1
    activities_total: int = 0
    replay_listing: ReplayListing | None = None
    failure: str | None = Field(
        default=None, description="The first route failure, when work went on after it"
    )


class ReplaySpec(BaseModel):
    """Publish stored objects into a route at the start of an execution (filled in by issue 3)."""

    source_execution_id: str
    from_stage: str
    from_path: str | None = None
    to_route: str
    replay_source: Literal["storage", "lineage", "manual"] = "storage"
    replay_batch_id: str
    keys: list[str] | None = None
    metadata: dict[str, Any] | None = None
    page_size: int = 100
    # Keys per publishing chunk: the keys are listed first, then published a chunk at a time while
    # the route already handles the chunks before. None: one activity lists and publishes them all
    # before the first batch (executions started before chunked publishing).
    chunk_keys: int | None = None
    # True: one activity lists and checks the keys and writes the publishable ones as pages the
    # route's batches derive their messages from (each message's lineage row is written once, when
    # its batch commits). Gates replays started before it onto the paths above.
    derived: bool = False
    # True (with `derived`): the publishing activity announces its full pages as they land, and the
    # route starts on them while the listing goes on (`REPLAY_KEYS_SIGNAL`).
    streamed: bool = False
    # True: the derived messages' ids sort with the replay batch (`ReplayKeys.clustered_ids`).
    clustered_ids: bool = False

    def derivation(self) -> ReplayKeys:
        return ReplayKeys(
            replay_batch_id=self.replay_batch_id,
            stage=self.from_stage,
            metadata=self.metadata,
            clustered_ids=self.clustered_ids,
        )


class ReplayChunkTask(BaseModel):
    """Publish the keys of manifest pages [first_page, first_page + pages) as messages."""

    spec: ReplaySpec
    manifest: SpillRef  # the listed keys, as pages of `spec.chunk_keys` JSON strings
    first_page: int
    pages: int


class ReplayListing(BaseModel):
    """What the publishing phase of a replay found and wrote as messages."""

    objects_found: int
    objects_published: int
    objects_failed: int = 0
    errors: list[str] = Field(default_factory=list)
    spill: SpillRef | None = None

    def counts(self) -> dict[str, Any]:
        """What the execution record keeps under `replay` (the spill reference stays internal)."""
        return self.model_dump(include={"objects_found", "objects_published", "objects_failed", "errors"})


class ReplayRecordTask(BaseModel):
    spec: ReplaySpec
    listing: ReplayListing


class ResumeSpec(BaseModel):
    """Resume an earlier execution: carry what it finished, run only what it did not."""

    source_execution_id: str
    config: Literal["snapshot", "latest"] = "snapshot"
    page_size: int = 100


class ResumeTask(BaseModel):
    spec: ResumeSpec
    execution_id: str
    routes: list[str]
    collect_routes: list[str] = Field(default_factory=list)
    init_route: str | None = None
    page_sizes: dict[str, int] = Field(default_factory=dict)


class ResumePlan(BaseModel):
    """What a resume found in its source: messages still to handle per route (spilled) and
    collect routes still to run; everything else the source finished is carried over."""

    queues: dict[str, SpillRef] = Field(default_factory=dict)
    collect: dict[str, int] = Field(default_factory=dict)
    objects_carried: int = 0
    messages_pending: int = 0
    dropped: dict[str, int] = Field(
        default_factory=dict, description="Pending messages for routes the config no longer has"
    )


class ExecutionInput(BaseModel):
    execution_id: str
    pipeline: PipelineConfig
    config_hash: str
    init_message: Message | None = None
    init_route: str | None = None
    replay: ReplaySpec | None = None
    heartbeat_timeout_seconds: float = 10.0
    max_in_flight: int = 200
    activities_per_run: int = 2000
    state: CarriedState | None = None
    read_executions: list[str] = Field(
        default_factory=list,
        description="Earlier executions whose objects handlers may read (replay ancestry)",
    )
    worker_loss_budget: int = Field(
        default=0, description="Batch attempts a route may lose to dying workers on top of retry.max_attempts"
    )
    resume: ResumeSpec | None = None
    preview_messages: int | None = Field(
        default=None, description="Dry run: each route handles at most this many messages"
    )
    finalize_locally: bool = Field(
        default=False,
        description="Write the final record with a local activity. Every start sets it now; inputs "
        "of workflows started before lack it, so their histories replay unchanged "
        "(versioning by input, not workflow.patched(): a patch upserts a search attribute, a "
        "visibility write per execution)",
    )

    @field_serializer("pipeline")
    def _pipeline_wire_form(self, pipeline: PipelineConfig) -> dict[str, Any]:
        return config_wire_form(pipeline)


class ExecutionLaunch(BaseModel):
    """How to start one execution's workflow (from the API, or as a backfill's child)."""

    input: ExecutionInput
    workflow_id: str
    task_queue: str
    search: dict[str, str] = Field(default_factory=dict, description="Keyword search attributes")
    summary: str = ""

    def options(self, summary: str | None = None) -> dict[str, Any]:
        """The workflow-start options every launcher passes (client start or child workflow);
        `summary` replaces the default summary shown in the Temporal UI."""
        return {
            "id": self.workflow_id,
            "task_queue": self.task_queue,
            "search_attributes": TypedSearchAttributes(
                [SearchAttributePair(SearchAttributeKey.for_keyword(k), v) for k, v in self.search.items()]
            ),
            "static_summary": summary or self.summary,
        }


class ExecutionProgress(BaseModel):
    execution_id: str
    status: Literal["running", "completed", "failed", "cancelled"]
    started_at: datetime
    runs: int
    activities: int
    routes: list[RouteProgress]
    error: str | None = None
    replay: ReplayListing | None = None


class FinalizeInput(BaseModel):
    execution_id: str
    status: Literal["completed", "failed", "cancelled"]
    error: str | None = None
    started_at: datetime
    completed_at: datetime
    routes: list[RouteProgress]


class ExecutionSummary(BaseModel):
    execution_id: str
    status: Literal["completed"]
    messages_processed: int
    objects_written: int
    routes: list[RouteProgress]
    extra: dict[str, Any] = Field(default_factory=dict)


BackfillDateStatus = Literal["pending", "running", "success", "failed", "cancelled", "skipped"]


class BackfillItem(BaseModel):
    date: str
    execution_id: str


class BackfillInput(BaseModel):
    backfill_id: str
    runs: list[BackfillItem] = Field(description="In date order")
    max_parallel: int = 1


class BackfillRunTask(BaseModel):
    backfill_id: str
    date: str
    execution_id: str


class PreparedRun(BaseModel):
    """A backfill date ready to start (`launch`), or skipped because it already has a successful run."""

    launch: ExecutionLaunch | None = None
    skipped_by: str | None = None


class BackfillProgress(BaseModel):
    backfill_id: str
    status: Literal["running", "completed", "failed", "cancelled"]
    dates: dict[str, BackfillDateStatus]


class FinishBackfill(BaseModel):
    backfill_id: str
    status: Literal["completed", "failed", "cancelled"]
    completed_at: datetime
    error: str | None = None


class ScheduledRunInput(BaseModel):
    """What a config's Temporal Schedule starts each time it fires."""

    config_id: str
    trigger: str


class ScheduledRunTask(BaseModel):
    config_id: str
    execution_id: str
    trigger: str


class HandlerCheckInput(BaseModel):
    """Handler strings to import and check, by the task queue whose workers will run them."""

    queues: dict[str, list[str]]
    timeout_seconds: float = 10.0


class HandlerCheck(BaseModel):
    """One handler as a worker sees it: `code` None when it imports and has the right signature."""

    handler: str
    queue: str
    code: str | None = None
    message: str = ""
    suggestion: str = ""


class HandlerCheckResult(BaseModel):
    checks: list[HandlerCheck] = Field(default_factory=list)


CarriedState.model_rebuild()
