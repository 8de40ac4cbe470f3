"""Dry runs: a pipeline run for real on the workers, in preview mode, and then removed.

Each route handles at most `PREVIEW_MESSAGES` messages; the run writes to its own prefix like any
execution, its outputs are previewed (at most `PREVIEW_ROWS` rows per node), and then everything
it left is deleted (objects, records, logs, lineage), so it appears in no list, calendar or
dashboard. A run that does not finish within SLUICE_DRY_RUN_TIMEOUT is cancelled: 504, with
what finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from temporalio.client import WorkflowFailureError
from temporalio.common import WorkflowIDReusePolicy
from temporalio.service import RPCError

from sluice.errors import DeadlineExceededError, NotFoundError, UnavailableError
from sluice.ids import uuid7
from sluice.services.executions import DRY_RUN_TRIGGER, ExecutionService, new_run
from sluice.services.node_data import NodeDataService
from sluice.services.system import SystemService
from sluice.tabular import objects_table, to_rows
from sluice.workflow_io import WORKFLOW_NAME, RouteProgress

PREVIEW_MESSAGES = 10
PREVIEW_ROWS = 10
NODE_STATUS = {"completed": "success", "running": "running", "pending": "pending"}

log = logging.getLogger("sluice.dry_runs")


@dataclass
class NodePreview:
    node_id: str
    name: str
    status: str
    columns: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    messages_processed: int = 0


class DryRunService:
    def __init__(self, executions: ExecutionService, node_data: NodeDataService, system: SystemService):
        self.executions = executions
        self.node_data = node_data
        self.system = system

    async def run(
        self, config_id: str, params: dict[str, Any] | None, *, triggered_by: str | None
    ) -> dict[str, NodePreview]:
        config = await self.executions.configs.current(config_id)
        execution_id = str(uuid7())
        record, launch = self.executions.plan(
            new_run(config, execution_id, trigger=DRY_RUN_TRIGGER, triggered_by=triggered_by, params=params)
        )
        launch.input.preview_messages = PREVIEW_MESSAGES
        client = await self.executions.gateway.client()
        await self.executions.insert(record)
        try:
            handle = await client.start_workflow(
                WORKFLOW_NAME,
                launch.input,
                **launch.options(f"dry run of {launch.summary}"),
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            )
        except RPCError as exc:
            await self.system.delete_executions([execution_id])
            self.executions.gateway.forget()
            raise UnavailableError(
                f"could not start the dry run on Temporal: {exc.message}", error_code="TEMPORAL_UNAVAILABLE"
            ) from exc
        timeout = self.executions.settings.seconds("dry_run_timeout")
        finished = True
        try:
            await asyncio.wait_for(handle.result(), timeout)
        except WorkflowFailureError:
            pass  # a failed node: reported below with its error
        except TimeoutError:
            finished = False
            with contextlib.suppress(Exception):
                await handle.cancel(reason="dry run timed out")
                await asyncio.wait_for(handle.result(), self.executions.settings.cancel_wait_seconds)
        try:
            nodes = await self._report(execution_id)
        finally:
            await self.system.delete_executions([execution_id])
        if not finished:
            raise DeadlineExceededError(
                f"the dry run did not finish within {self.executions.settings.dry_run_timeout}; "
                "nodes show what finished",
                error_code="DRY_RUN_TIMEOUT",
                extra={"nodes": {k: v.__dict__ for k, v in nodes.items()}},
            )
        return nodes

    async def _report(self, execution_id: str) -> dict[str, NodePreview]:
        record, routes = await self.executions.routes(execution_id)
        nodes: dict[str, NodePreview] = {}
        for progress in routes:
            nodes[progress.route] = await self._node(record, progress)
        return nodes

    async def _node(self, record: Any, progress: RouteProgress) -> NodePreview:
        node = NodePreview(
            node_id=progress.route,
            name=progress.route,
            status=NODE_STATUS.get(progress.status, progress.status),
            error=progress.error,
            messages_processed=progress.messages_processed,
        )
        try:
            preview = await self.node_data.preview(record, progress.route, PREVIEW_ROWS)
            node.columns, node.rows = preview.columns, preview.rows
        except NotFoundError as exc:
            if exc.error_code == "NODE_OUTPUT_NOT_TABULAR":
                objects = await self.node_data.objects(record, progress.route, limit=PREVIEW_ROWS)
                sized = []
                for obj in objects:
                    with contextlib.suppress(Exception):
                        obj.size = await self.node_data.storage.size(obj.key)
                    sized.append({"key": obj.key, "content_type": obj.content_type, "size": obj.size})
                node.columns, node.rows = to_rows(objects_table(sized))
        return node
