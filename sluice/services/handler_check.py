"""The half of config validation that needs a worker: import each handler where it will run.

The API never imports handler modules (that would run pipeline code in the API process); it asks
a worker through HandlerCheckWorkflow, one short activity per task queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from datetime import timedelta

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

from sluice.errors import UnavailableError
from sluice.handlers.registry import BUILTINS
from sluice.pipeline_config import PipelineConfig
from sluice.services.gateway import TemporalGateway
from sluice.settings import Settings
from sluice.validation import ValidationIssue, issue
from sluice.workflow_io import HANDLER_CHECK_WORKFLOW, HandlerCheck, HandlerCheckInput, HandlerCheckResult

log = logging.getLogger("sluice.handler_check")


class HandlerChecker:
    def __init__(self, gateway: TemporalGateway, settings: Settings):
        self.gateway = gateway
        self.settings = settings

    async def check(self, config: PipelineConfig) -> list[ValidationIssue]:
        """E302/E303/E304/E305 as the workers see them; W301 when none answers in time."""
        paths: dict[tuple[str, str], list[str]] = defaultdict(list)
        for i, route in enumerate(config.routes):
            if route.handler not in BUILTINS:  # built-ins ship with Sluice: nothing to check
                paths[(route.task_queue or self.settings.task_queue, route.handler)].append(
                    f"routes[{i}].handler"
                )
        if not paths:
            return []
        queues: dict[str, list[str]] = defaultdict(list)
        for queue, handler in paths:
            queues[queue].append(handler)
        timeout = self.settings.seconds("handler_check_timeout")
        unchecked: list[tuple[str, str, str]] = []  # (queue, handler, why)
        try:
            idle = await self._unpolled(queues)
            if self.settings.task_queue in idle["workflow"]:
                raise LookupError(f"no worker polls task queue {self.settings.task_queue!r}")
            for queue in idle["activity"]:
                unchecked += [(queue, h, f"no worker polls task queue {queue!r}") for h in queues.pop(queue)]
            checks = (
                (
                    await self._run(HandlerCheckInput(queues=dict(queues), timeout_seconds=timeout), timeout)
                ).checks
                if queues
                else []
            )
        except Exception as exc:  # Temporal down, no worker at all: "not checked", never a 500
            why = (
                "Temporal is not reachable"
                if isinstance(exc, UnavailableError)
                else str(exc)
                if isinstance(exc, LookupError)
                else "no worker answered"
            )
            log.info("handler check skipped: %s", why)
            checks = []
            unchecked = [(q, h, why) for q, hs in queues.items() for h in hs] + unchecked
        for queue, handler, why in unchecked:
            checks.append(
                HandlerCheck(
                    handler=handler,
                    queue=queue,
                    code="W301",
                    message=f"handler {handler!r} was not checked on a worker: {why}",
                    suggestion=f"start a worker that polls {queue!r} (sluice worker) and validate again",
                )
            )
        issues = []
        for check in checks:
            if check.code is None:
                continue
            severity = "warning" if check.code.startswith("W") else "error"
            for path in paths[(check.queue, check.handler)]:
                issues.append(issue(severity, check.code, path, check.message, check.suggestion))
        return issues

    async def _unpolled(self, queues: dict[str, list[str]]) -> dict[str, set[str]]:
        """Queues no worker has polled lately: no need to wait for an answer that cannot come."""
        client = await self.gateway.client()
        idle: dict[str, set[str]] = {"workflow": set(), "activity": set()}
        wanted = [("workflow", self.settings.task_queue), *(("activity", q) for q in queues)]
        for kind, queue in wanted:
            resp = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=client.namespace,
                    task_queue=TaskQueue(name=queue),
                    task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW
                    if kind == "workflow"
                    else TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
                )
            )
            if not resp.pollers:
                idle[kind].add(queue)
        return idle

    async def _run(self, inp: HandlerCheckInput, wait: float) -> HandlerCheckResult:
        client = await self.gateway.client()
        handle = await client.start_workflow(
            HANDLER_CHECK_WORKFLOW,
            inp,
            id=f"sluice-check-{uuid.uuid4()}",
            task_queue=self.settings.task_queue,
            execution_timeout=timedelta(seconds=wait + 30),
            result_type=HandlerCheckResult,
        )
        try:
            # The workflow itself needs a worker on the main queue: bound the whole wait too.
            return await asyncio.wait_for(handle.result(), wait + 2)
        except TimeoutError:
            with contextlib.suppress(Exception):
                await handle.terminate("no worker answered the handler check")
            raise
