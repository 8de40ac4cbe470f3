"""The two README commands' building blocks: `sluice validate`, `sluice run`, `sluice dev`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from sluice.runtime.devstack import free_port, free_ports, port_in_use
from tests.conftest import REPO, workflow_closed

EXAMPLE = REPO / "examples" / "docs-ingest" / "pipeline.yaml"
SLUICE = [sys.executable, "-m", "sluice"]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO)
    for key in [k for k in e if k.startswith("SLUICE_")]:
        del e[key]
    return e


def test_validate_exit_codes(tmp_path: Path) -> None:
    ok = subprocess.run([*SLUICE, "validate", str(EXAMPLE)], capture_output=True, text=True, env=env())
    assert ok.returncode == 0 and "valid (0 error(s)" in ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nroutes:\n  - {name: a, handler: noop, next: [b]}\n")
    out = subprocess.run([*SLUICE, "validate", str(bad), "--json"], capture_output=True, text=True, env=env())
    assert out.returncode == 1
    assert json.loads(out.stdout)["issues"][0]["code"] == "E201"
    missing = subprocess.run(
        [*SLUICE, "validate", str(tmp_path / "nope.yaml")], capture_output=True, text=True, env=env()
    )
    assert missing.returncode == 2 and "cannot read" in missing.stderr and "Traceback" not in missing.stderr


def test_run_embedded_prints_summary_and_exit_code(tmp_path: Path) -> None:
    api, temporal, ui = free_ports(3)
    ports = ["--port", str(api), "--temporal-port", str(temporal), "--ui-port", str(ui)]
    data = ["--data-dir", str(tmp_path / "state")]
    ok = subprocess.run(
        [*SLUICE, "run", str(EXAMPLE), *data, *ports, "--json"],
        capture_output=True,
        text=True,
        env=env(),
        timeout=180,
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    final = json.loads(ok.stdout)
    assert final["status"] == "completed"
    assert "completed: 5 routes" in ok.stderr and "objects written" in ok.stderr
    assert (tmp_path / "state" / "storage" / final["id"] / "embeddings").is_dir()

    failing = tmp_path / "failing.yaml"
    failing.write_text(
        "name: failing\ninit_message: {route: a}\nroutes:\n"
        "  - {name: a, handler: 'tests.handlers:always_fail', stage: s, retry: {max_attempts: 1}}\n"
    )
    bad = subprocess.run(
        [*SLUICE, "run", str(failing), *data, *ports],
        capture_output=True,
        text=True,
        env=env(),
        timeout=180,
        cwd=REPO,
    )
    assert bad.returncode == 1, bad.stderr[-2000:]
    assert "failed" in bad.stderr and "this route always fails" in bad.stderr


async def _wait_health(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=1) as http:
        while time.monotonic() < deadline:
            assert proc.poll() is None, "sluice dev exited early"
            try:
                if (await http.get(f"{url}/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("sluice dev did not come up")


async def _run_example(http: httpx.AsyncClient) -> dict:
    """Store (or find: one config per pipeline) and run the docs-ingest example through the API;
    the execution once it stops running."""
    created = await http.post(
        "/api/v1/configs", content=EXAMPLE.read_text(), headers={"Content-Type": "application/yaml"}
    )
    assert created.status_code in (201, 409), created.text
    config_id = created.json()["id"] if created.status_code == 201 else created.json()["config_id"]
    run = (await http.post(f"/api/v1/configs/{config_id}/run", json={"base_dir": str(EXAMPLE.parent)})).json()
    for _ in range(300):
        body = (await http.get(f"/api/v1/executions/{run['id']}")).json()
        if body["status"] != "running":
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"execution {run['id']} still running after 30s")


async def test_dev_stops_cleanly_and_keeps_state(tmp_path: Path) -> None:
    api, temporal, ui = free_ports(3)
    cmd = [
        *SLUICE,
        "dev",
        "--data-dir",
        str(tmp_path / "dev"),
        "--port",
        str(api),
        "--temporal-port",
        str(temporal),
        "--ui-port",
        str(ui),
    ]
    url = f"http://127.0.0.1:{api}"

    first = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        await _wait_health(url, first)
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            assert (await http.get(f"http://127.0.0.1:{ui}/")).status_code == 200  # the Temporal Web UI
            run = await _run_example(http)
            assert run["status"] == "completed", run
    finally:
        first.send_signal(signal.SIGINT)  # what Ctrl-C sends
        out, _ = await asyncio.to_thread(first.communicate, timeout=60)
    assert first.returncode == 0, out.decode()[-2000:]
    assert b"stopped." in out and b"Traceback" not in out
    assert not any(port_in_use(p) for p in (api, temporal, ui)), "a child process outlived sluice dev"
    # Temporal's SQLite file is in write-ahead-log mode (a setting its header keeps).
    with contextlib.closing(sqlite3.connect(tmp_path / "dev" / "temporal.db")) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    second = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        await _wait_health(url, second)
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            again = (await http.get(f"/api/v1/executions/{run['id']}")).json()
            assert again["status"] == "completed" and again["objects_written"] > 0
            routes = (await http.get(f"/api/v1/executions/{run['id']}/routes")).json()["routes"]
            assert len(routes) == 5
        # Temporal kept the workflow too (SQLite file in the data dir).
        from temporalio.client import Client

        client = await Client.connect(f"127.0.0.1:{temporal}")
        status = await workflow_closed(client, f"sluice-exec-{run['id']}")
        assert status.name == "COMPLETED"

        # A worker that dies is restarted, and the stack keeps running pipelines.
        def worker_pids() -> list[int]:
            pids = []
            for p in psutil.Process(second.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):  # the killed one is a zombie until reaped
                    if p.status() != psutil.STATUS_ZOMBIE and "worker" in p.cmdline():
                        pids.append(p.pid)
            return pids

        [old] = worker_pids()
        os.kill(old, signal.SIGKILL)
        for _ in range(200):
            if (pids := worker_pids()) and old not in pids:
                break
            await asyncio.sleep(0.05)
        assert pids and old not in pids, "sluice dev did not restart its worker"
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            assert (await _run_example(http))["status"] == "completed"
    finally:
        second.send_signal(signal.SIGINT)
        await asyncio.to_thread(second.communicate, timeout=60)


@pytest.mark.parametrize("busy", ["api"])
async def test_dev_refuses_a_busy_port(tmp_path: Path, busy: str) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        temporal, ui = free_ports(2)
        out = subprocess.run(
            [
                *SLUICE,
                "dev",
                "--data-dir",
                str(tmp_path),
                "--port",
                str(port),
                "--temporal-port",
                str(temporal),
                "--ui-port",
                str(ui),
            ],
            capture_output=True,
            text=True,
            env=env(),
            timeout=60,
        )
    assert out.returncode == 2 and "already in use" in out.stderr and "Traceback" not in out.stderr


async def test_api_and_worker_run_separately_against_existing_temporal(
    temporal_address: str, tmp_path: Path
) -> None:
    """`sluice api` and `sluice worker` as two processes sharing Temporal, database and storage."""
    port = free_port()
    e = env()
    e.update(
        {
            "SLUICE_TEMPORAL_ADDRESS": temporal_address,
            "SLUICE_DATABASE_URL": f"sqlite:///{tmp_path / 'shared.db'}",
            "SLUICE_STORAGE_URL": (tmp_path / "objects").as_uri(),
            "SLUICE_TASK_QUEUE": f"separate-{port}",
            "SLUICE_API_PORT": str(port),
            "SLUICE_READ_ROOTS": str(EXAMPLE.parent),  # read_files reads the example's documents
        }
    )
    api = subprocess.Popen([*SLUICE, "api"], env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    worker = subprocess.Popen([*SLUICE, "worker"], env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_health(url, api)
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            assert (await http.get("/ready")).json() == {"status": "ok", "database": "ok", "temporal": "ok"}
            run = await _run_example(http)
            assert run["status"] == "completed", run
        assert (tmp_path / "objects" / run["id"] / "index" / "manifest.json").is_file()
    finally:
        for proc in (api, worker):
            proc.send_signal(signal.SIGTERM)
        outputs = [await asyncio.to_thread(p.communicate, timeout=60) for p in (api, worker)]
    assert api.returncode == 0 and worker.returncode == 0, [o[0].decode()[-1500:] for o in outputs]
    # The worker runs on uvloop (uvicorn[standard] brings it on Linux), as the API serves on it.
    assert "(event loop: uvloop)" in outputs[1][0].decode(), outputs[1][0].decode()[-1500:]
