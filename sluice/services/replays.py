"""Replays: validate a request, then start an execution whose first phase publishes stored
objects into the target route (execution replay and detached replay share all of it)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from sluice.db.models import ExecutionRecord
from sluice.errors import InvalidArgumentError, NotFoundError
from sluice.ids import uuid7
from sluice.pipeline_config import PipelineConfig
from sluice.replay_sources import ancestry, has_candidates
from sluice.services.configs import ConfigService, require_valid
from sluice.services.executions import ExecutionService, NewExecution, StartedExecution
from sluice.settings import Settings
from sluice.storage.base import ObjectStorage, StorageKeyError
from sluice.storage.keys import is_sidecar, validate_key, validate_relative_path
from sluice.workflow_io import ReplayListing, ReplaySpec

MAX_MANUAL_KEYS = 1000
_EXECUTION_KEY = re.compile(r"^[0-9a-fA-F-]{36}/")


@dataclass
class DetachedOutcome:
    record: ExecutionRecord
    to_queue: str
    listing: ReplayListing | None  # None: answered before publishing (respond-async)


class ReplayService:
    def __init__(
        self,
        executions: ExecutionService,
        configs: ConfigService,
        storage: ObjectStorage,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
    ):
        self.executions = executions
        self.configs = configs
        self.storage = storage
        self.sessions = sessions
        self.settings = settings

    async def replay_execution(
        self,
        parent_ref: str,
        *,
        replay_source: Literal["storage", "lineage", "manual"],
        from_stage: str,
        to_route: str,
        from_path: str | None = None,
        metadata: dict[str, Any] | None = None,
        tag: str | None = None,
        config_id: str | None = None,
        trigger: str = "replay",
        triggered_by: str | None = None,
        execution_id: str | None = None,
        wait: bool = True,
    ) -> StartedExecution:
        """Validate and start the replay; with `wait`, answer once its objects are published (a
        Workflow Update), else at once (the counts land on the execution record later)."""
        parent = await self.executions.find(parent_ref)
        if config_id is not None:
            target = await self.configs.current(config_id)
            yaml_text, target_id, version = target.yaml, target.id, target.version
        else:
            yaml_text, target_id, version = await self._parent_config(parent)
        pipeline, _ = require_valid(yaml_text)
        if pipeline.route(to_route) is None:
            raise InvalidArgumentError(
                f"route {to_route!r} is not in pipeline {pipeline.name!r} "
                f"(routes: {', '.join(r.name for r in pipeline.routes)})",
                error_code="UNKNOWN_ROUTE",
            )
        stage = _relative(from_stage, "from_stage")
        path = _relative(from_path, "from_path") if from_path else None
        chain = await ancestry(self.sessions, parent.id)
        await self._check_stage(parent, stage, chain)
        spec = ReplaySpec(
            source_execution_id=parent.id,
            from_stage=stage,
            from_path=path,
            to_route=to_route,
            replay_source=replay_source,
            replay_batch_id=str(uuid7()),
            keys=await self._manual_keys(parent, stage, from_path, metadata, chain)
            if replay_source == "manual"
            else None,
            metadata={k: v for k, v in (metadata or {}).items() if k != "keys"} or None,
            derived=True,
            streamed=True,
            clustered_ids=True,
        )
        await self._check_not_empty(spec)
        return await self.executions.start(
            NewExecution(
                execution_id=execution_id or str(uuid7()),
                triggered_by=triggered_by,
                read_executions=chain,
                config_id=target_id,
                config_version=version,
                yaml_text=yaml_text,
                pipeline=pipeline,
                init_message=None,
                tag=tag,
                trigger=trigger,
                parent_execution_id=parent.id,
                replay=spec,
            ),
            idempotent=execution_id is not None,
            wait_for_publish=wait,
        )

    async def detached(
        self,
        *,
        from_execution_id: str,
        from_stage: str,
        to_route: str,
        from_path: str | None,
        triggered_by: str | None = None,
        execution_id: str | None = None,
        wait: bool = True,
    ) -> DetachedOutcome:
        started = await self.replay_execution(
            from_execution_id,
            replay_source="storage",
            from_stage=from_stage,
            to_route=to_route,
            from_path=from_path,
            trigger="detached-replay",
            triggered_by=triggered_by,
            execution_id=execution_id,
            wait=wait,
        )
        route = PipelineConfig.from_snapshot(started.record.config_yaml).route(to_route)
        listing = started.listing
        if listing is None and wait:
            listing = ReplayListing(
                objects_found=0,
                objects_published=0,
                errors=[started.publish_error or "publishing did not complete"],
            )
        return DetachedOutcome(
            record=started.record,
            to_queue=(route.task_queue if route and route.task_queue else self.settings.task_queue),
            listing=listing,
        )

    async def _parent_config(self, parent: ExecutionRecord) -> tuple[str, str, int]:
        """The parent's config as it is now (fix a route, then replay), or its snapshot if deleted."""
        try:
            current = await self.configs.current(parent.config_id)
            return current.yaml, current.id, current.version
        except NotFoundError:
            return parent.config_yaml, parent.config_id, parent.config_version

    async def _check_stage(self, parent: ExecutionRecord, stage: str, chain: list[str]) -> None:
        declared: set[str] = set()
        async with self.sessions() as session:
            snapshots = (
                await session.exec(
                    select(ExecutionRecord.config_yaml).where(col(ExecutionRecord.id).in_(chain))
                )
            ).all()
        for yaml_text in snapshots:
            try:
                snapshot = PipelineConfig.from_snapshot(yaml_text)
            except Exception:
                continue
            declared |= {r.stage for r in snapshot.routes if r.stage}
        if stage not in declared:
            raise InvalidArgumentError(
                f"stage {stage!r} is not written by any route of execution {parent.id} or its ancestors "
                f"(stages: {', '.join(sorted(declared)) or 'none'})",
                error_code="UNKNOWN_STAGE",
            )

    async def _manual_keys(
        self,
        parent: ExecutionRecord,
        stage: str,
        from_path: str | None,
        metadata: dict[str, Any] | None,
        chain: list[str],
    ) -> list[str]:
        raw = (metadata or {}).get("keys")
        if raw is None:
            raw = [from_path] if from_path else []
        if not isinstance(raw, list) or not raw or not all(isinstance(k, str) and k for k in raw):
            raise InvalidArgumentError(
                "manual replay needs object keys: `metadata.keys` (a list) or `from_path` (one key)",
                error_code="INVALID_KEYS",
            )
        if len(raw) > MAX_MANUAL_KEYS:
            raise InvalidArgumentError(
                f"manual replay takes at most {MAX_MANUAL_KEYS} keys; use the storage or lineage source for more",
                error_code="TOO_MANY_KEYS",
            )
        allowed = [f"{e}/{stage}/" for e in chain]
        keys: list[str] = []
        for item in dict.fromkeys(raw):
            try:
                key = (
                    validate_key(item)
                    if _EXECUTION_KEY.match(item)
                    else f"{parent.id}/{stage}/{_relative(item, 'key')}"
                )
                validate_key(key)
            except StorageKeyError as exc:
                raise InvalidArgumentError(str(exc), error_code="INVALID_PATH") from None
            if not any(key.startswith(prefix) for prefix in allowed) or is_sidecar(key):
                raise InvalidArgumentError(
                    f"key {item!r} is not an object of stage {stage!r} of execution {parent.id} or its ancestors",
                    error_code="INVALID_KEYS",
                )
            keys.append(key)
        return keys

    async def _check_not_empty(self, spec: ReplaySpec) -> None:
        """Storage is not a cache: a replay that would publish nothing is refused up front."""
        if await has_candidates(spec, self.storage, self.sessions):
            return
        where = f"{spec.source_execution_id}/{spec.from_stage}/" + (spec.from_path or "")
        raise InvalidArgumentError(
            f"no stored objects to replay under {where} (source: {spec.replay_source}); "
            "storage is not a cache, so Sluice never replays nothing",
            error_code="STAGE_EMPTY",
        )


def _relative(value: str, what: str) -> str:
    try:
        cleaned = validate_relative_path(value, what)
    except StorageKeyError as exc:
        raise InvalidArgumentError(str(exc), error_code="INVALID_PATH") from None
    if not cleaned and what == "from_stage":
        raise InvalidArgumentError("from_stage must not be empty", error_code="INVALID_PATH")
    return cleaned
