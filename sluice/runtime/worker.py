"""Worker factory and entry point (`python worker.py`, `sluice worker`).

Scale horizontally by starting more of these against the same Temporal, database and storage:
every worker polls the same task queues, and Temporal spreads activities across them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from sluice.activities import ActivityDeps, build_activities
from sluice.handlers.registry import add_import_paths, allow_modules
from sluice.runtime.signals import stop_on_signals
from sluice.settings import Settings
from sluice.temporal import connect, ensure_search_attributes
from sluice.workflows import WORKFLOWS

log = logging.getLogger("sluice.worker")


def build_worker(client: Client, settings: Settings, deps: ActivityDeps, task_queue: str) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=build_activities(deps),
        max_concurrent_activities=settings.worker_max_concurrent_activities,
        graceful_shutdown_timeout=timedelta(seconds=10),
        identity=f"{deps.worker_id}/{task_queue}",
    )


def worker_queues(settings: Settings) -> list[str]:
    """The main queue plus the route queues this worker also serves (SLUICE_WORKER_TASK_QUEUES)."""
    extra = [q.strip() for q in settings.worker_task_queues.split(",") if q.strip()]
    return list(dict.fromkeys([settings.task_queue, *extra]))


async def run_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    add_import_paths(settings.handler_paths)
    allow_modules(settings.handler_modules)
    client = await connect(settings, attempts=60, delay=1.0)
    await ensure_search_attributes(client, settings.temporal_namespace)
    deps = ActivityDeps.from_settings(settings)
    queues = worker_queues(settings)
    workers = [build_worker(client, settings, deps, q) for q in queues]
    with stop_on_signals(stop) as stopping:
        try:
            async with contextlib.AsyncExitStack() as stack:
                for worker in workers:
                    await stack.enter_async_context(worker)
                log.info(
                    "worker %s polling %s on %s", deps.worker_id, ", ".join(queues), settings.temporal_address
                )
                await stopping.wait()
        finally:
            await deps.close()
    log.info("worker %s stopped", deps.worker_id)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run_worker(Settings()))
