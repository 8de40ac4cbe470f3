"""Worker factory and entry point (`python worker.py`, `sluice worker`).

Scale horizontally by starting more of these against the same Temporal, database and storage:
every worker polls the same task queues, and Temporal spreads activities across them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from datetime import timedelta

import psutil
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from sluice.activities import ActivityDeps, build_activities
from sluice.handlers.registry import configure_handlers
from sluice.logcontext import configure_logging, install_capture
from sluice.metrics import serve as serve_metrics
from sluice.runtime.heap import freeze_startup_heap
from sluice.runtime.loop import run_on_fast_loop
from sluice.runtime.signals import stop_on_signals
from sluice.settings import Settings
from sluice.temporal import connect, ensure_search_attributes
from sluice.tracing import setup_tracing
from sluice.workflows import WORKFLOWS

log = logging.getLogger("sluice.worker")
FORCE_EXIT_MARGIN = 5.0


# No sandbox in production. It guards workflow code that users write, catching non-deterministic
# calls as they develop; Sluice's workflows are its own code (handlers run in activities), and the
# suite replays every recorded history and runs workflow tests in the default sandbox, so those
# checks still gate every change. Here the sandbox cost a third of the worker's CPU per
# execution: it enters itself again for every payload of every activation (bench_executions).
WORKFLOW_RUNNER = UnsandboxedWorkflowRunner()


def build_worker(client: Client, settings: Settings, deps: ActivityDeps, task_queue: str) -> Worker:
    install_capture(settings.handler_log_level)  # what handler code logs becomes execution logs
    return Worker(
        client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=build_activities(deps),
        max_concurrent_activities=settings.worker_max_concurrent_activities,
        graceful_shutdown_timeout=timedelta(seconds=settings.seconds("worker_shutdown_grace")),
        workflow_runner=WORKFLOW_RUNNER,
        identity=f"{deps.worker_id}/{task_queue}",
    )


def worker_queues(settings: Settings) -> list[str]:
    """The main queue plus the route queues this worker also serves (SLUICE_WORKER_TASK_QUEUES)."""
    extra = [q.strip() for q in settings.worker_task_queues.split(",") if q.strip()]
    return list(dict.fromkeys([settings.task_queue, *extra]))


async def run_worker(
    settings: Settings, stop: asyncio.Event | None = None, *, own_process: bool = False
) -> None:
    """Poll until SIGINT/SIGTERM (or `stop`), then shut down: in-flight batches get
    SLUICE_WORKER_SHUTDOWN_GRACE to finish, the rest go back to Temporal. `own_process`: this
    process is the worker, so a handler that hangs (or forked) cannot keep it alive past the grace
    and a few seconds."""
    configure_handlers(settings)
    serve_metrics(settings.metrics_port, "worker")
    client = await connect(settings, attempts=60, delay=1.0)
    await ensure_search_attributes(client, settings.temporal_namespace)
    deps = ActivityDeps.from_settings(settings)
    queues = worker_queues(settings)
    workers = [build_worker(client, settings, deps, q) for q in queues]
    grace = settings.seconds("worker_shutdown_grace")
    with stop_on_signals(stop) as stopping:
        try:
            async with contextlib.AsyncExitStack() as stack:
                for worker in workers:
                    await stack.enter_async_context(worker)
                if own_process:
                    freeze_startup_heap()
                log.info(
                    "worker %s polling %s on %s (event loop: %s)",
                    deps.worker_id,
                    ", ".join(queues),
                    settings.temporal_address,
                    type(asyncio.get_running_loop()).__module__.split(".")[0],
                )
                await stopping.wait()
                log.info("worker %s stopping: in-flight batches have %gs to finish", deps.worker_id, grace)
                if own_process:
                    exit_after(grace + FORCE_EXIT_MARGIN)
        finally:
            if own_process:
                await asyncio.to_thread(reap_children)
            await deps.close()
    log.info("worker %s stopped", deps.worker_id)


def reap_children(wait: float = 3.0) -> None:
    """Stop processes a handler started and left behind (TERM, then KILL)."""
    children = psutil.Process().children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=wait)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()


def exit_after(seconds: float) -> None:
    """A watchdog: a handler thread that never returns would block interpreter exit forever."""

    def watchdog() -> None:
        time.sleep(seconds)
        log.error("worker did not stop within %gs (a handler hangs); exiting now", seconds)
        reap_children(wait=1.0)
        os._exit(1)

    threading.Thread(target=watchdog, name="sluice-shutdown-watchdog", daemon=True).start()


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_format)
    setup_tracing(settings, "sluice-worker")
    run_on_fast_loop(run_worker(settings, own_process=True))
