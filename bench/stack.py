"""The benchmarks' shared stack and bookkeeping (used by bench_executions.py and bench_replay.py).

`bench_stack` starts what `sluice dev` starts (mirrors sluice.runtime.devstack.embedded_stack): a Temporal
dev server subprocess, the Sluice worker subprocess and the API (uvicorn) in this process, plus the
raw-Temporal baseline's worker subprocess (`python -m bench.raw_worker`) on the same server.
Everything is stopped on exit, also on errors and cancellation. `isolated_run` gives a run a temp
dir and an empty working directory with no SLUICE_* variables. The rest reads /proc (CPU, memory)
and writes the JSON report.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from temporalio.client import Client  # noqa: E402

from sluice.api.app import create_app  # noqa: E402
from sluice.db.migrate import upgrade_database  # noqa: E402
from sluice.runtime.devstack import (  # noqa: E402
    WORKER_COMMAND,
    child_env,
    free_ports,
    serve_in_background,
    tail,
    temporal_dev_command,
    terminate,
    wait_for_temporal,
)
from sluice.runtime.loop import run_on_fast_loop  # noqa: E402
from sluice.settings import Settings  # noqa: E402
from sluice.temporal import temporal_cli_path  # noqa: E402

RESULTS_DIR = REPO / "bench" / "results"
RAW_QUEUE = "bench-raw"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- /proc readings ------------------------------------------------------------------------------
def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process; NaN where /proc is missing."""
    if pid == os.getpid():
        t = os.times()
        return t.user + t.system
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def memory_kib(pid: int, field: str = "VmHWM") -> float:
    """A memory figure of /proc/<pid>/status in KiB (VmHWM: peak RSS, VmRSS: current); NaN if unknown."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except (OSError, IndexError, ValueError):
        pass
    return float("nan")


def reset_peak_rss(pid: int) -> bool:
    """Restart a process's VmHWM from its current RSS (Linux: write 5 to clear_refs); False if refused."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


# -- processes -----------------------------------------------------------------------------------
def temporal_version() -> str:
    try:
        out = subprocess.run(
            [temporal_cli_path(), "--version"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return re.sub(r"^temporal version\s*", "", out) or "unknown"


@dataclass
class Stack:
    settings: Settings
    client: Client
    http: httpx.AsyncClient
    logs: dict[str, Path]
    pids: dict[str, int]
    procs: dict[str, subprocess.Popen[bytes]]
    app: FastAPI  # the API served in this process (its services are what the API calls)

    async def watch(self) -> str:
        """Return (as an error message) as soon as one of the stack's processes exits."""
        while True:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    return f"the {name} process exited with code {proc.returncode}"
            await asyncio.sleep(0.5)

    def dump_logs(self) -> None:
        for name, path in self.logs.items():
            log(f"--- {name} log (tail) ---\n{tail(path, 20) or '(no log)'}")


def bench_settings(tmp: Path, task_queue: str) -> Settings:
    """Settings of a fresh stack in `tmp`: SQLite DB and local-file storage there, handlers from the repo."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp / "data",
        task_queue=task_queue,
        handler_paths=str(REPO),
        database_url=None,
        database_schema=None,
        storage_url=None,
        heartbeat_timeout="10s",
    )


@contextlib.asynccontextmanager
async def bench_stack(
    settings: Settings,
    tmp: Path,
    temporal_db: str,
    *,
    raw_queue: str = RAW_QUEUE,
    http_timeout: float = 60.0,
) -> AsyncIterator[Stack]:
    """The `sluice dev` stack (mirrors sluice.runtime.devstack.embedded_stack) plus the raw worker.

    Temporal dev server subprocess (SQLite file in `tmp` unless temporal_db == "memory"), database
    migrations, the Sluice worker subprocess (`python -m sluice.runtime.cli worker`, environment from
    devstack.child_env), the raw worker subprocess, and the API served by uvicorn in this process.
    Everything is stopped on exit, also on errors and cancellation.
    """
    api_port, temporal_port, ui_port = free_ports(3)
    settings = settings.model_copy(
        update={
            "temporal_address": f"127.0.0.1:{temporal_port}",
            "temporal_ui_url": f"http://127.0.0.1:{ui_port}",
            "api_port": api_port,
        }
    )
    logs = {name: tmp / f"{name}.log" for name in ("temporal", "sluice-worker", "raw-worker")}
    temporal = sluice_worker = raw_worker = None
    api = contextlib.AsyncExitStack()  # the API's server and its client

    def spawn(cmd: list[str], env: dict[str, str] | None, log_name: str) -> subprocess.Popen[bytes]:
        with logs[log_name].open("ab") as fh:
            return subprocess.Popen(
                cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    try:
        db_file = tmp / "temporal.db" if temporal_db == "file" else None
        temporal = spawn(temporal_dev_command(settings, temporal_port, ui_port, db_file), None, "temporal")
        client = await wait_for_temporal(temporal, settings, logs["temporal"])
        await upgrade_database(settings)
        sluice_worker = spawn(WORKER_COMMAND, child_env(settings), "sluice-worker")
        raw_env = dict(os.environ)
        raw_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), raw_env.get("PYTHONPATH")]))
        raw_env["PYTHONUNBUFFERED"] = "1"
        raw_worker = spawn(
            [
                sys.executable,
                "-m",
                "bench.raw_worker",
                "--address",
                settings.temporal_address,
                "--namespace",
                settings.temporal_namespace,
                "--task-queue",
                raw_queue,
                "--max-concurrent-activities",
                str(settings.worker_max_concurrent_activities),
            ],
            raw_env,
            "raw-worker",
        )

        app = create_app(settings, temporal_client=client)
        http = await api.enter_async_context(served(app, api_port, http_timeout))
        pids = {
            "temporal": temporal.pid,
            "sluice-worker": sluice_worker.pid,
            "raw-worker": raw_worker.pid,
            "bench": os.getpid(),
        }
        procs = {"temporal": temporal, "sluice-worker": sluice_worker, "raw-worker": raw_worker}
        yield Stack(settings, client, http, logs, pids, procs, app)
    finally:
        await api.aclose()
        await asyncio.gather(terminate(sluice_worker), terminate(raw_worker))
        await terminate(temporal)


@contextlib.asynccontextmanager
async def served(app: FastAPI, port: int, http_timeout: float = 60.0) -> AsyncIterator[httpx.AsyncClient]:
    """`app` served by uvicorn in this process (as `sluice dev` serves the API), and a client of it."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = await serve_in_background(server)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=http_timeout) as http:
            yield http
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await task


async def until_stack_fails(stack: Stack, work: Any) -> Any:
    """Await the coroutine `work`, but fail fast when a worker or Temporal dies (instead of at a timeout)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.create_task(stack.watch())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            raise RuntimeError(watcher.result())
        return task.result()
    finally:
        for t in (task, watcher):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t


# -- the run's surroundings ----------------------------------------------------------------------
def cancel_on_sigterm() -> None:
    """SIGTERM cancels the running main task, so the stack is stopped as on Ctrl-C."""
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)


@contextlib.contextmanager
def isolated_run() -> Iterator[Path]:
    """A temp dir (removed afterwards), entered through an empty working directory, no SLUICE_* vars.

    Keeps the run's stack clean of the caller's deployment: no SLUICE_* variables, no .env. The empty
    working directory matters for us and the workers: no stray .env is read, and nothing there can
    shadow a package (`python -m` and SLUICE_HANDLER_PATHS put the cwd first on sys.path).
    """
    for key in [k for k in os.environ if k.startswith("SLUICE_")]:
        del os.environ[key]
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="sluice-bench-", ignore_cleanup_errors=True) as tmp_name:
        empty = Path(tmp_name) / "cwd"
        empty.mkdir()
        os.chdir(empty)
        try:
            yield Path(tmp_name)
        finally:
            os.chdir(cwd)


def json_safe(value: Any) -> Any:
    """NaN (a figure that could not be taken) becomes null: strict JSON has no NaN."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def write_report(report: dict[str, Any], name: str) -> Path:
    """bench/results/<name>-<UTC stamp of meta.timestamp>.json (the folder is gitignored)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = (
        report["meta"]["timestamp"].replace("-", "").replace(":", "").replace(" UTC", "Z").replace(" ", "-")
    )
    out = RESULTS_DIR / f"{name}-{stamp}.json"
    out.write_text(json.dumps(json_safe(report), indent=2) + "\n", encoding="utf-8")
    return out


def run_main(
    main_async: Callable[[Any], Awaitable[dict[str, Any]]],
    render: Callable[[dict[str, Any]], str],
    args: Any,
    name: str,
) -> int:
    """Run a benchmark, write its JSON report, print the table (or the JSON with --json)."""
    try:
        report = run_on_fast_loop(main_async(args))  # the loop `sluice dev` serves the API on
    except KeyboardInterrupt:
        log("bench: interrupted")
        return 130
    except asyncio.CancelledError:
        log("bench: terminated")
        return 143
    out = write_report(report, name)
    if args.json:
        print(json.dumps(json_safe(report), indent=2))
    else:
        print(render(report))
        print(f"\n(JSON: {out.relative_to(REPO)})")
    return 0
