"""Horizontal scale, shown: two worker processes share one execution, and when one is killed
mid-run the other finishes it without losing or duplicating stage objects."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Stack, StackFactory, start_worker, wait_until_polling

PIPELINE = """
name: scale
init_message: {{route: load, payload: {{count: {count}}}}}
routes:
  - name: load
    handler: tests.handlers:fanout
    stage: items
    next: [work]
  - name: work
    handler: tests.handlers:record_pid
    stage: pids
    batch_size: 1
    concurrency: 8
    params: {{sleep: {sleep}}}
"""


def pids_of(stack: Stack, execution_id: str) -> list[int]:
    return [int(p.read_text()) for p in stack.objects(execution_id, "pids")]


@pytest.fixture
async def two_workers(make_stack: StackFactory, tmp_path: Path):  # type: ignore[no-untyped-def]
    stack = await make_stack(worker=False)
    logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
    procs = [start_worker(stack, log) for log in logs]
    try:
        await wait_until_polling(logs)
        yield stack, procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                await asyncio.to_thread(proc.wait, 20)
            except subprocess.TimeoutExpired:
                proc.kill()


async def test_two_workers_share_one_execution(two_workers) -> None:  # type: ignore[no-untyped-def]
    stack, procs = two_workers
    config = await stack.create_config(PIPELINE.format(count=40, sleep=0.2))
    done = await stack.wait((await stack.run(config["id"])).json()["id"], timeout=120)
    assert done["status"] == "completed"
    pids = pids_of(stack, done["id"])
    assert len(pids) == 40
    assert set(pids) == {p.pid for p in procs}, "both worker processes should have run route activities"


async def test_killing_a_worker_mid_run_leaves_the_other_to_finish(two_workers) -> None:  # type: ignore[no-untyped-def]
    stack, procs = two_workers
    config = await stack.create_config(PIPELINE.format(count=60, sleep=0.4))
    execution_id = (await stack.run(config["id"])).json()["id"]
    for _ in range(400):
        if pids_of(stack, execution_id):
            break
        await asyncio.sleep(0.05)
    first = pids_of(stack, execution_id)
    assert first, "no route activity ran"
    # Kill whichever worker is doing the work; the other must take over.
    victim = next(p for p in procs if p.pid == first[0])
    survivor = next(p for p in procs if p is not victim)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()

    done = await stack.wait(execution_id, timeout=120)
    assert done["status"] == "completed", done
    files = sorted(p.name for p in (stack.storage_root / execution_id / "pids").iterdir())
    objects = [f for f in files if not f.endswith(".meta.json")]
    assert len(objects) == 60 and len(files) == 120, "every object exactly once, each with one sidecar"
    pids = pids_of(stack, execution_id)
    assert survivor.pid in pids
    routes = {
        r["route"]: r
        for r in (await stack.http.get(f"/api/v1/executions/{execution_id}/routes")).json()["routes"]
    }
    assert routes["work"]["messages_processed"] == 60
    sidecar = json.loads((stack.storage_root / execution_id / "pids" / files[1]).read_text())
    assert sidecar["worker"].split("@")[0] in {str(victim.pid), str(survivor.pid)}
