"""Faults cost nothing: a lost or stopping worker never spends a handler retry, and states tell
the truth when things break."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
import websockets
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import PG_URL, Stack, StackFactory, start_worker, wait_until_polling


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
        assert list((stack.storage_root / "_sluice" / "tmp").iterdir()) == []  # no temporary files left
    finally:
        for w in workers:
            if w.poll() is None:
                w.terminate()
                w.wait(timeout=30)


async def run_under_sigterm(
    stack: Stack, tmp_path: Path, grace: str, params: str
) -> tuple[dict, dict, int, float]:
    """Start a batch on worker 1, SIGTERM it mid-batch, let worker 2 finish the execution."""
    marks = tmp_path / "marks"
    config = await stack.create_config(
        "name: draining\ninit_message: {route: a}\nroutes:\n"
        "  - name: a\n    handler: tests.handlers:emit_then_wait\n    stage: out\n"
        "    retry: {max_attempts: 1, backoff: 100ms}\n"
        f"    params: {{count: 2, marks: '{marks}', {params}}}\n"
    )
    first = start_worker(stack, tmp_path / "w1.log", SLUICE_WORKER_SHUTDOWN_GRACE=grace)
    second: subprocess.Popen[bytes] | None = None
    try:
        await wait_until_polling([tmp_path / "w1.log"])
        run = (await stack.run(config["id"])).json()
        await wait_for(marks / "attempt-1")
        loop = asyncio.get_running_loop()
        stopping = loop.time()
        first.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(first.wait, 60)
        took = loop.time() - stopping
        second = start_worker(stack, tmp_path / "w2.log")
        done = await stack.wait(run["id"], timeout=120)
        routes = (await stack.http.get(f"/api/v1/executions/{run['id']}/routes")).json()
        return done, route_of(routes, "a"), code, took
    finally:
        for w in (first, second):
            if w is not None and w.poll() is None:
                w.terminate()
                w.wait(timeout=30)


async def test_sigterm_lets_an_in_flight_batch_finish(make_stack: StackFactory, tmp_path: Path) -> None:
    stack = await make_stack(worker=False)
    done, a, code, took = await run_under_sigterm(stack, tmp_path, "10s", "sleep: 1")
    assert code == 0 and took < 10
    assert done["status"] == "completed"
    assert (a["retries"], a["worker_losses"]) == (0, 0)  # the batch finished where it started
    assert not (tmp_path / "marks" / "attempt-2").exists()


async def test_sigterm_hands_a_long_batch_back_without_spending_a_retry(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    stack = await make_stack(worker=False)
    done, a, code, took = await run_under_sigterm(stack, tmp_path, "1s", "first_sleep: 60, sleep: 0.1")
    assert code == 0 and took < 1 + 5  # the grace, then the batch went back to Temporal
    assert done["status"] == "completed", done
    assert (a["retries"], a["worker_losses"]) == (0, 1)
    assert (tmp_path / "marks" / "attempt-2").exists()
    assert [p.name for p in stack.objects(done["id"], "out")] == ["obj-0.txt", "obj-1.txt"]


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


LINES = int(os.environ.get("SLUICE_TEST_LOG_LINES", "625"))  # per batch, 8 batches
N_STREAMS = int(os.environ.get("SLUICE_TEST_LOG_STREAMS", "20"))


@pytest.mark.parametrize("database", ["postgres", "sqlite"])
async def test_every_log_line_reaches_every_stream_once_in_order(
    make_stack: StackFactory, database: str, tmp_path: Path
) -> None:
    """8 batches write 5,000 lines at once while 20 SSE streams and a WebSocket read: on PostgreSQL
    ids commit out of order, and still every stream gets every stored line once, in id order.
    The worker runs in its own process, as deployed (the API and its 21 clients share this one)."""
    stack = await make_stack(database=database, worker=False, heartbeat_timeout="10s")
    worker = start_worker(stack, tmp_path / "worker.log")
    await wait_until_polling([tmp_path / "worker.log"])
    config = await stack.create_config(
        "name: chatty\ninit_message: {route: fan, payload: {count: 8}}\nroutes:\n"
        "  - {name: fan, handler: 'tests.handlers:fan_messages', next: [talk]}\n"
        "  - {name: talk, handler: 'tests.handlers:chatty_bulk', batch_size: 1, concurrency: 8,"
        " params: {lines: LINES}}\n".replace("LINES", str(LINES))
    )
    run = (await stack.run(config["id"])).json()

    async def sse() -> list[int]:
        ids: list[int] = []
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=120) as http:
            async with http.stream(
                "GET", f"/api/v1/executions/{run['id']}/logs", headers={"Accept": "text/event-stream"}
            ) as resp:
                event = None
                async for line in resp.aiter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event == "log":
                        ids.append(json.loads(line[6:])["id"])
                    elif line.startswith("data: ") and event == "status":
                        return ids
        return ids

    async def ws() -> list[int]:
        ids: list[int] = []
        finished = -1
        url = stack.base_url.replace("http://", "ws://") + f"/api/ws?execution_id={run['id']}&since_id=0"
        async with websockets.connect(url, max_size=None) as socket:
            while True:
                event = json.loads(await asyncio.wait_for(socket.recv(), 60))
                if event["type"] == "run_status" and event["status"] != "running":
                    finished = event["id"]
                if event["type"] == "log":
                    ids.append(event["id"])
                    if event["id"] == finished:
                        return ids

    try:
        streams = await asyncio.gather(*(sse() for _ in range(N_STREAMS)), ws())
        assert (await stack.wait(run["id"]))["status"] == "completed"
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    stored = [
        e["id"]
        for e in (
            await stack.http.get(f"/api/v1/executions/{run['id']}/logs", params={"limit": 50_000})
        ).json()["logs"]
    ]
    assert len(stored) >= 8 * LINES and stored == sorted(stored)
    for ids in streams:
        assert ids == stored  # every line, once, in id order


async def test_log_lines_committed_out_of_order_arrive_in_order(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    """PostgreSQL hands out ids at insert and shows rows at commit: a line whose transaction commits
    late (a smaller id appearing after larger ones) still reaches every stream, and in id order."""
    stack = await make_stack(database="postgres")
    marker = tmp_path / "started"
    config = await stack.create_config(
        "name: waits\ninit_message: {route: a}\nroutes:\n"
        f"  - {{name: a, handler: 'tests.handlers:slow', stage: s, params: {{marker: '{marker}'}}}}\n"
    )
    run = (await stack.run(config["id"])).json()
    await wait_for(marker)

    async def sse() -> list[int]:
        ids: list[int] = []
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as http:
            async with http.stream(
                "GET", f"/api/v1/executions/{run['id']}/logs", headers={"Accept": "text/event-stream"}
            ) as resp:
                event = None
                async for line in resp.aiter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event == "log":
                        ids.append(json.loads(line[6:])["id"])
                    elif line.startswith("data: ") and event == "status":
                        return ids
        return ids

    readers = [asyncio.create_task(sse()) for _ in range(5)]
    await asyncio.sleep(0.5)
    engine = create_async_engine(
        PG_URL, connect_args={"server_settings": {"search_path": stack.settings.database_schema}}
    )
    insert = text(
        "INSERT INTO execution_logs (execution_id, route, level, message, kind, timestamp) "
        "VALUES (:e, 'a', 'info', :m, 'handler', now()) RETURNING id"
    )
    try:
        async with engine.connect() as slow, engine.connect() as fast:
            late_tx = await slow.begin()
            late = (await slow.execute(insert, {"e": run["id"], "m": "committed late"})).scalar_one()
            for i in range(5):
                async with fast.begin():
                    await fast.execute(insert, {"e": run["id"], "m": f"committed early {i}"})
            await asyncio.sleep(1.0)  # the hub sees the larger ids first
            await late_tx.commit()
    finally:
        await engine.dispose()
    await asyncio.sleep(0.5)
    assert (await stack.http.post(f"/api/v1/executions/{run['id']}/cancel")).status_code == 200
    streams = await asyncio.gather(*readers)
    stored = [e["id"] for e in (await stack.http.get(f"/api/v1/executions/{run['id']}/logs")).json()["logs"]]
    assert late in stored
    for ids in streams:
        assert ids == stored


async def test_replays_can_answer_at_once_and_a_cancel_while_publishing_is_cancelled(stack: Stack) -> None:
    config = await stack.create_config(
        "name: bulk\ninit_message: {route: a, payload: {count: 1}}\nroutes:\n"
        "  - {name: a, handler: 'tests.handlers:fanout', stage: raw, next: [b]}\n"
        "  - {name: b, handler: 'tests.handlers:tally', params: {tally: /dev/null}}\n"
    )
    parent = await stack.wait((await stack.run(config["id"])).json()["id"])
    bulk = stack.storage_root / parent["id"] / "raw" / "bulk"
    bulk.mkdir(parents=True)
    for i in range(8000):  # enough that publishing takes a while
        (bulk / f"{i:05d}.txt").write_text("x")
    body = {"replay_source": "storage", "from_stage": "raw", "to_route": "b"}
    url = f"/api/v1/executions/{parent['id']}/replay"

    started = await stack.http.post(url, json=body, headers={"Prefer": "respond-async"})
    assert started.status_code == 202 and started.headers["preference-applied"] == "respond-async"
    replay = started.json()
    assert replay["status"] == "running" and replay["parent_execution_id"] == parent["id"]
    cancelled = await stack.http.post(f"/api/v1/executions/{replay['id']}/cancel")
    assert cancelled.status_code in (200, 202)
    final = await stack.wait(replay["id"])
    assert final["status"] == "cancelled", final  # not "failed: publishing the replay failed"

    detached = await stack.http.post(
        "/api/v1/replay",
        json={"from_execution_id": parent["id"], "from_stage": "raw", "to_route": "b"},
        headers={"Prefer": "respond-async"},
    )
    assert detached.status_code == 202
    done = await stack.wait(detached.json()["id"], timeout=120)
    assert done["status"] == "completed"
    assert done["replay"]["objects_published"] == 8001 and done["replay"]["objects_found"] == 8001
