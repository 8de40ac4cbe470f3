"""The platform itself: what an operator checks (database size, Temporal, workers, storage) and
storage retention (purge of old executions, their records and their objects)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import func, make_url, text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

from sluice import __version__
from sluice.clock import utcnow
from sluice.db.models import (
    BackfillRunRecord,
    ExecutionLogRecord,
    ExecutionRecord,
    IdempotencyRecord,
    LineageRecord,
    NodeProfileRecord,
    PipelineConfigRecord,
    ReplayLineageRecord,
    RouteRunRecord,
)
from sluice.pipeline_config import PipelineConfig
from sluice.services.executions import DRY_RUN_TRIGGER, TERMINAL
from sluice.services.gateway import TemporalGateway
from sluice.settings import Settings
from sluice.storage.base import ObjectStorage
from sluice.storage.keys import INTERNAL_ROOT

PURGE_BATCH = 100


@dataclass
class PurgeResult:
    deleted: int
    days: int
    objects_deleted: int = 0
    skipped_active: int = 0
    kept_as_ancestors: int = 0
    kept_ids: list[str] = field(default_factory=list)


def human_size(size: int) -> str:
    return f"{size / (1024 * 1024):.2f} MB"


class SystemService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        gateway: TemporalGateway,
        settings: Settings,
        storage: ObjectStorage,
    ):
        self.sessions = sessions
        self.gateway = gateway
        self.settings = settings
        self.storage = storage

    async def info(self) -> dict[str, Any]:
        async with self.sessions() as session:
            pipelines = (await session.exec(select(func.count()).select_from(PipelineConfigRecord))).one()
            active = (
                await session.exec(
                    select(func.count())
                    .select_from(ExecutionRecord)
                    .where(ExecutionRecord.status == "running", ExecutionRecord.trigger != DRY_RUN_TRIGGER)
                )
            ).one()
            size = await self._db_size(session)
        temporal, workers = await self._temporal()
        url = make_url(self.settings.resolved_database_url)
        location = self.settings.resolved_storage_url
        return {
            "version": __version__,
            "db_size": size,
            "db_size_mb": human_size(size),
            "pipelines": int(pipelines),
            "active_runs": int(active),
            # Sluice does not cap concurrent runs (Temporal queues them): no limit to report.
            "max_concurrent_runs": None,
            "database": {
                "backend": url.get_backend_name(),
                "url": url.render_as_string(hide_password=True),
                "schema": self.settings.database_schema,
            },
            "temporal": temporal,
            "workers": workers,
            "storage": {"backend": location.split(":", 1)[0], "location": location},
        }

    async def _db_size(self, session: AsyncSession) -> int:
        dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
        if dialect == "postgresql":
            schema = self.settings.database_schema
            if schema:
                query = text(
                    "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = :schema AND c.relkind = 'r'"
                ).bindparams(schema=schema)
            else:
                query = text("SELECT pg_database_size(current_database())")
        else:
            query = text("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()")
        return int((await session.exec(query)).one()[0])  # type: ignore[call-overload]

    async def _temporal(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Whether Temporal answers, and who polls each task queue Sluice uses."""
        temporal: dict[str, Any] = {
            "address": self.settings.temporal_address,
            "namespace": self.settings.temporal_namespace,
            "reachable": False,
            "ui_url": self.settings.temporal_ui_url,
        }
        workers: list[dict[str, Any]] = []
        try:
            client = await asyncio.wait_for(self.gateway.client(), 5)
            for queue in await self._queues():
                for kind, kind_name in (
                    (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, "workflow"),
                    (TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY, "activity"),
                ):
                    resp = await asyncio.wait_for(
                        client.workflow_service.describe_task_queue(
                            DescribeTaskQueueRequest(
                                namespace=client.namespace,
                                task_queue=TaskQueue(name=queue),
                                task_queue_type=kind,
                            )
                        ),
                        5,
                    )
                    if kind_name == "workflow" and queue != self.settings.task_queue:
                        continue
                    workers.append(
                        {
                            "task_queue": queue,
                            "kind": kind_name,
                            "pollers": [
                                {
                                    "identity": p.identity,
                                    "last_access_time": p.last_access_time.ToDatetime().isoformat() + "Z"
                                    if p.HasField("last_access_time")
                                    else None,
                                }
                                for p in resp.pollers
                            ],
                        }
                    )
            temporal["reachable"] = True
        except Exception as exc:  # unreachable Temporal is an answer here, never a 500
            self.gateway.forget()
            temporal["error"] = f"{type(exc).__name__}: {exc}"[:300]
        return temporal, workers

    async def _queues(self) -> list[str]:
        """The main task queue and every route queue the stored configs name."""
        queues = [self.settings.task_queue]
        async with self.sessions() as session:
            for yaml_text in (await session.exec(select(PipelineConfigRecord.yaml))).all():
                try:
                    pipeline = PipelineConfig.from_snapshot(yaml_text)
                except Exception:
                    continue
                for route in pipeline.routes:
                    if route.task_queue and route.task_queue not in queues:
                        queues.append(route.task_queue)
        return queues

    # -- retention ----------------------------------------------------------------------------
    async def delete_executions(self, ids: list[str]) -> int:
        """Executions gone for good: stored objects first, then every row about them (a crash in
        between leaves rows whose objects are gone, which running this again deletes). Returns the
        objects deleted."""
        objects = 0
        for execution_id in ids:
            objects += await self.storage.delete_prefix(f"{execution_id}/")
            await self.storage.delete_prefix(f"{INTERNAL_ROOT}/{execution_id}/")
        async with self.sessions() as session:
            for model, column in (
                (ExecutionLogRecord, ExecutionLogRecord.execution_id),
                (LineageRecord, LineageRecord.execution_id),
                (ReplayLineageRecord, ReplayLineageRecord.execution_id),
                (RouteRunRecord, RouteRunRecord.execution_id),
                (NodeProfileRecord, NodeProfileRecord.execution_id),
                (BackfillRunRecord, BackfillRunRecord.execution_id),
                (IdempotencyRecord, IdempotencyRecord.execution_id),
                (ExecutionRecord, ExecutionRecord.id),
            ):
                await session.exec(delete(model).where(col(column).in_(ids)))  # type: ignore[call-overload]
            await session.commit()
        return objects

    async def purge(self, days: int, *, progress: Callable[[int, int], None] | None = None) -> PurgeResult:
        """Delete executions created more than `days` days ago, with their logs, lineage, route
        runs, profiles and stored objects. Never a running execution, never the ancestor of an
        execution that stays (a replay or resume still reads its objects). Batched, objects before
        rows: a crash half-way leaves rows whose objects are gone, which a rerun deletes."""
        cutoff = utcnow() - timedelta(days=days)
        async with self.sessions() as session:
            old = list(
                (
                    await session.exec(
                        select(ExecutionRecord.id, ExecutionRecord.status).where(
                            col(ExecutionRecord.created_at) < cutoff
                        )
                    )
                ).all()
            )
            links = dict(
                (
                    await session.exec(
                        select(ExecutionRecord.id, ExecutionRecord.parent_execution_id).where(
                            col(ExecutionRecord.parent_execution_id).is_not(None)
                        )
                    )
                ).all()
            )
        active = {i for i, status in old if status not in TERMINAL}
        candidates = {i for i, status in old if status in TERMINAL}
        protected: set[str] = set()
        for child, parent in links.items():
            if child in candidates:
                continue  # goes too: its ancestors need not stay for it
            seen = 0
            while parent and seen < 1000:
                protected.add(parent)
                parent, seen = links.get(parent), seen + 1
        kept = sorted(candidates & protected)
        doomed = sorted(candidates - protected)
        result = PurgeResult(
            deleted=0, days=days, skipped_active=len(active), kept_as_ancestors=len(kept), kept_ids=kept[:20]
        )
        for start in range(0, len(doomed), PURGE_BATCH):
            batch = doomed[start : start + PURGE_BATCH]
            result.objects_deleted += await self.delete_executions(batch)
            result.deleted += len(batch)
            if progress is not None:
                progress(result.deleted, len(doomed))
        return result
