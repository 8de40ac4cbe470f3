"""Faults cost nothing: a lost or stopping worker never spends a handler retry, and states tell
the truth when things break."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

from tests.conftest import Stack, StackFactory, start_worker, wait_until_polling


async def wait_for(path: Path, timeout: float = 60.0) -> str:
    for _ in range(int(timeout / 0.05)):
        if path.exists() and path.read_text():
            return path.read_text()
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def route_of(body: dict, name: str) -> dict:
    return next(r for r in body["routes"] if r["route"] == name)


async def test_killed_workers_spend_no_handler_retry(make_stack: StackFactory, tmp_path: Path) -> None:
    """`max_attempts: 1`, and the batch's worker is SIGKILLed three times: it still completes,
    and every object exists exactly once."""
    stack = await make_stack(worker=False)
    marks = tmp_path / "marks"
    config = await stack.create_config(
        "name: survivor\ninit_message: {route: a}\nroutes:\n"
        "  - name: a\n    handler: tests.handlers:emit_then_wait\n    stage: out\n"
        "    retry: {max_attempts: 1, backoff: 100ms}\n"
        f"    params: {{count: 4, sleep: 2, marks: '{marks}'}}\n"
    )
    workers: list[subprocess.Popen[bytes]] = []

    def spawn(n: int) -> Path:
        log = tmp_path / f"worker-{n}.log"
        workers.append(start_worker(stack, log))
        return log

    try:
        await wait_until_polling([spawn(0)])
        run = (await stack.run(config["id"])).json()
        for attempt in (1, 2, 3):
            pid = int(await wait_for(marks / f"attempt-{attempt}"))
            victim = next(w for w in workers if w.pid == pid)
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            await wait_until_polling([spawn(attempt)])
        done = await stack.wait(run["id"], timeout=120)
        assert done["status"] == "completed", done
        assert (marks / "attempt-4").exists()
        files = [p.name for p in stack.objects(run["id"], "out")]
        assert files == [f"obj-{i}.txt" for i in range(4)]  # exactly once: same keys every attempt
        sidecars = sorted(p.name for p in (stack.storage_root / run["id"] / "out").glob("*.meta.json"))
        assert sidecars == [f"obj-{i}.txt.meta.json" for i in range(4)]
        routes = (await stack.http.get(f"/api/v1/executions/{run['id']}/routes")).json()
        a = route_of(routes, "a")
        assert (a["retries"], a["worker_losses"], a["objects_written"]) == (0, 3, 4)
        leftovers = [p for p in stack.storage_root.rglob(".tmp-*")]
        assert leftovers == []
    finally:
        for w in workers:
            if w.poll() is None:
                w.terminate()
                w.wait(timeout=30)


async def test_handler_failures_still_spend_retries(stack: Stack) -> None:
    config = await stack.create_config(
        "name: flaky\ninit_message: {route: a}\nroutes:\n"
        "  - {name: a, handler: 'tests.handlers:flaky', stage: s, params: {succeed_on: 3},"
        " retry: {max_attempts: 3, backoff: 50ms}}\n"
    )
    done = await stack.wait((await stack.run(config["id"])).json()["id"])
    assert done["status"] == "completed"
    a = route_of((await stack.http.get(f"/api/v1/executions/{done['id']}/routes")).json(), "a")
    assert (a["retries"], a["worker_losses"]) == (2, 0)

    spent = await stack.create_config(
        "name: spent\ninit_message: {route: a}\nroutes:\n"
        "  - {name: a, handler: 'tests.handlers:always_fail', stage: s, retry: {max_attempts: 2, backoff: 50ms}}\n"
    )
    failed = await stack.wait((await stack.run(spent["id"])).json()["id"])
    assert failed["status"] == "failed" and "this route always fails" in failed["error"]
    a = route_of((await stack.http.get(f"/api/v1/executions/{failed['id']}/routes")).json(), "a")
    assert (a["retries"], a["worker_losses"]) == (1, 0)


async def test_a_route_timeout_is_a_handler_failure(stack: Stack) -> None:
    config = await stack.create_config(
        "name: slowpoke\ninit_message: {route: a}\nroutes:\n"
        "  - {name: a, handler: 'tests.handlers:slow', stage: s, timeout: 300ms, params: {seconds: 30},"
        " retry: {max_attempts: 2, backoff: 50ms}}\n"
    )
    failed = await stack.wait((await stack.run(config["id"])).json()["id"], timeout=60)
    assert failed["status"] == "failed" and "route's timeout" in failed["error"]
    a = route_of((await stack.http.get(f"/api/v1/executions/{failed['id']}/routes")).json(), "a")
    assert (a["retries"], a["worker_losses"]) == (1, 0)
