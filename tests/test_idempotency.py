"""Retry-safe starts: an Idempotency-Key retry gets the same execution, even after the API died
half-way; the same key with another request is refused; a start that never reached Temporal
gives its tag back."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from sluice.clock import utcnow
from sluice.runtime.devstack import free_port
from tests.conftest import Stack, StackFactory

PIPELINE = """
name: retried
init_message: {route: a, payload: {count: 2}}
routes:
  - {name: a, handler: 'tests.handlers:fanout', stage: raw, next: [b]}
  - {name: b, handler: 'tests.handlers:copy', stage: copied}
"""


async def executions(stack: Stack) -> list[dict]:
    return (await stack.http.get("/api/v1/executions", params={"limit": 200})).json()["items"]


async def test_same_key_same_request_same_execution(stack: Stack) -> None:
    config = await stack.create_config(PIPELINE)
    url = f"/api/v1/configs/{config['id']}/run"
    key = {"Idempotency-Key": "order-42"}
    first = await stack.http.post(url, json={"count": 3}, headers=key)
    second = await stack.http.post(url, json={"count": 3}, headers=key)
    assert first.status_code == second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    done = await stack.wait(first.json()["id"])
    again = await stack.http.post(url, json={"count": 3}, headers=key)  # after it finished, too
    assert (
        again.status_code == 200
        and again.json()["id"] == done["id"]
        and again.json()["status"] == "completed"
    )
    assert [e["id"] for e in await executions(stack)] == [done["id"]]
    assert len(stack.objects(done["id"], "copied")) == 3  # ran once

    other = await stack.http.post(url, json={"count": 4}, headers=key)
    assert other.status_code == 422 and other.json()["error_code"] == "IDEMPOTENCY_KEY_REUSED"
    elsewhere = await stack.http.post(
        "/api/v1/runs", json={"namespace": "default", "layer": "default", "pipeline": "retried"}, headers=key
    )
    assert elsewhere.status_code == 422
    bad = await stack.http.post(url, headers={"Idempotency-Key": "spaces are not allowed"})
    assert bad.status_code == 400
    # Without a key, every request is a new start.
    assert (await stack.http.post(url)).json()["id"] != done["id"]


async def test_replays_and_the_runs_facade_are_idempotent(stack: Stack) -> None:
    config = await stack.create_config(PIPELINE)
    parent = await stack.wait((await stack.run(config["id"])).json()["id"])
    body = {"from_execution_id": parent["id"], "from_stage": "raw", "to_route": "b"}
    first = await stack.http.post("/api/v1/replay", json=body, headers={"Idempotency-Key": "r1"})
    second = await stack.http.post("/api/v1/replay", json=body, headers={"Idempotency-Key": "r1"})
    assert first.status_code == second.status_code == 200, second.text
    assert first.json()["execution_id"] == second.json()["execution_id"]
    assert second.json()["objects_published"] == 2 and second.json()["status"] == "publishing_complete"
    assert first.json()["replay_batch_id"] == second.json()["replay_batch_id"]

    replay_body = {"replay_source": "storage", "from_stage": "raw", "to_route": "b"}
    url = f"/api/v1/executions/{parent['id']}/replay"
    a = await stack.http.post(url, json=replay_body, headers={"Idempotency-Key": "r2"})
    b = await stack.http.post(url, json=replay_body, headers={"Idempotency-Key": "r2"})
    assert a.json()["id"] == b.json()["id"]

    run = {"namespace": "default", "layer": "default", "pipeline": "retried"}
    c = await stack.http.post("/api/v1/runs", json=run, headers={"Idempotency-Key": "r3"})
    d = await stack.http.post("/api/v1/runs", json=run, headers={"Idempotency-Key": "r3"})
    assert c.status_code == d.status_code == 202 and c.json()["run_id"] == d.json()["run_id"]
    ids = [e["id"] for e in await executions(stack)]
    assert len(ids) == len(set(ids)) == 4  # parent, two replays, one run


async def test_a_start_killed_with_the_api_is_found_by_its_retry(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    """A real kill: the API process dies at a random point of the request; the retry (to a new API
    process) returns the one execution the key stands for, started exactly once."""
    stack = await make_stack()  # worker and database; the API under test runs in its own process
    config = await stack.create_config(PIPELINE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env.update(
        {
            "SLUICE_TEMPORAL_ADDRESS": stack.settings.temporal_address,
            "SLUICE_DATABASE_URL": stack.settings.resolved_database_url,
            "SLUICE_STORAGE_URL": stack.settings.resolved_storage_url,
            "SLUICE_TASK_QUEUE": stack.settings.task_queue,
            "SLUICE_DATA_DIR": str(stack.settings.data_dir),
        }
    )

    async def api() -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "sluice", "api", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as http:
            for _ in range(300):
                try:
                    if (await http.get(f"{url}/health")).status_code == 200:
                        return proc, url
                except httpx.HTTPError:
                    await asyncio.sleep(0.05)
        raise AssertionError("api did not start")

    for delay in (0.0, 0.02, 0.08):
        key = {"Idempotency-Key": f"kill-{delay}"}
        proc, url = await api()
        try:
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                request = asyncio.create_task(http.post(f"/api/v1/configs/{config['id']}/run", headers=key))
                await asyncio.sleep(delay)
                proc.send_signal(signal.SIGKILL)
                with contextlib.suppress(httpx.HTTPError):  # it died with the API, or answered first
                    await request
        finally:
            proc.kill()
            proc.wait()
        proc, url = await api()
        try:
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                retry = await http.post(f"/api/v1/configs/{config['id']}/run", headers=key)
                assert retry.status_code == 200, retry.text
                again = await http.post(f"/api/v1/configs/{config['id']}/run", headers=key)
                assert again.json()["id"] == retry.json()["id"]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        done = await stack.wait(retry.json()["id"])
        assert done["status"] == "completed"
    ids = [e["id"] for e in await executions(stack)]
    assert len(ids) == len(set(ids)) == 3  # one execution per key, however the kills fell


async def test_a_start_that_never_reached_temporal_gives_its_tag_back(stack: Stack) -> None:
    config = await stack.create_config(PIPELINE)
    # What an API killed between writing the record and starting the workflow leaves behind.
    engine = create_async_engine(stack.settings.resolved_database_url)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO executions (id, config_id, config_version, config_yaml, config_hash, pipeline, "
                "namespace, layer, status, trigger, tag, workflow_id, task_queue, messages_processed, "
                "objects_written, created_at, started_at) VALUES (:id, :cid, 1, :y, 'h', 'retried', 'default', "
                "'default', 'running', 'manual', 'nightly', :wid, :q, 0, 0, :t, :t)"
            ),
            {
                "id": "01a00000-0000-7000-8000-000000000001",
                "cid": config["id"],
                "y": PIPELINE,
                "wid": "sluice-exec-01a00000-0000-7000-8000-000000000001",
                "q": stack.settings.task_queue,
                "t": utcnow() - timedelta(minutes=5),
            },
        )
    await engine.dispose()
    resp = await stack.run(config["id"], tag="nightly")
    assert resp.status_code == 200, resp.text
    assert resp.json()["tag"] == "nightly" and resp.json()["id"] != "01a00000-0000-7000-8000-000000000001"
    gone = await stack.http.get("/api/v1/executions/01a00000-0000-7000-8000-000000000001")
    assert gone.status_code == 404
    # A tag held by an execution that really ran stays taken.
    await stack.wait(resp.json()["id"])
    assert (await stack.run(config["id"], tag="nightly")).status_code == 409
