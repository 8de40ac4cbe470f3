"""Worker process for the raw-Temporal baseline: `python -m bench.raw_worker --address HOST:PORT`.

Serves the baselines of the benchmarks (bench_executions.py, bench_replay.py, compare_peers.py).
Started by bench.stack.bench_stack the same way the embedded stack starts Sluice's worker: its own
process, one temporalio Worker, pydantic data converter, SIGTERM stops it gracefully.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import timedelta

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from bench.handlers import raw_batch, raw_first, raw_noop, raw_object
from bench.raw_replay_workflow import RawReplayWorkflow
from bench.raw_workflow import RawPipelineWorkflow, RawStepsWorkflow
from sluice.runtime.signals import stop_on_signals


async def serve(address: str, namespace: str, task_queue: str, max_activities: int) -> None:
    client = await Client.connect(address, namespace=namespace, data_converter=pydantic_data_converter)
    with stop_on_signals() as stop:
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=[RawPipelineWorkflow, RawReplayWorkflow, RawStepsWorkflow],
            activities=[raw_first, raw_noop, raw_object, raw_batch],
            max_concurrent_activities=max_activities,
            graceful_shutdown_timeout=timedelta(seconds=10),
        ):
            print(f"raw worker polling {task_queue} on {address}", flush=True)
            await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", required=True)
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--task-queue", default="bench-raw")
    parser.add_argument("--max-concurrent-activities", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(serve(args.address, args.namespace, args.task_queue, args.max_concurrent_activities))


if __name__ == "__main__":
    main()
