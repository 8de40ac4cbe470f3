"""Chaos: kill workers, Temporal and the API while pipelines run; count what was lost.

    python bench/chaos.py                 # a few minutes: rounds of every scenario
    python bench/chaos.py --rounds 1 --kills 5

Every component is a real process of its own (Temporal dev server on a SQLite file, `sluice
worker`s, `sluice api`), killed with SIGKILL. Each round runs a 300-message fan-out and checks,
from storage, the database and Temporal: objects and sidecars exactly once, lineage rows exactly
once, route counts exact, no record stuck `running`, no workflow without a record; the `replay`
scenario then replays the run's outputs plus 20,000 more objects and kills workers while the
replay publishes its keys (its route already runs the pages announced). It prints, per
scenario: kills, executions, lost, duplicated, stuck, handler retries spent. `tests/test_chaos.py`
runs the same scenarios, smaller, in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from sqlmodel import select  # noqa: E402
from temporalio.api.enums.v1 import EventType, PendingActivityState  # noqa: E402
from temporalio.client import Client, WorkflowExecutionStatus  # noqa: E402

from sluice.db.engine import create_engine, session_factory  # noqa: E402
from sluice.db.migrate import upgrade_database  # noqa: E402
from sluice.db.models import ExecutionRecord  # noqa: E402
from sluice.runtime.devstack import (  # noqa: E402
    WORKER_COMMAND,
    child_env,
    free_ports,
    temporal_dev_command,
    terminate,
    wait_for_temporal,
)
from sluice.services.lineage import lineage_rows  # noqa: E402
from sluice.settings import Settings  # noqa: E402
from sluice.workflow_io import PUBLISH_REPLAY_KEYS, RUN_ROUTE  # noqa: E402

MESSAGES = 300
PIPELINE = """
name: chaos
init_message: {{route: load, payload: {{count: {count}}}}}
routes:
  - {{name: load, handler: 'tests.handlers:fanout', stage: raw, next: [copy]}}
  - name: copy
    handler: tests.handlers:slow_copy
    stage: copied
    batch_size: 5
    concurrency: 8
    retry: {{max_attempts: 1}}
    params: {{sleep: {sleep}}}
  - {{name: sink, handler: noop, batch_size: 100, concurrency: 8}}  # replays land here
"""


@dataclass
class Round:
    scenario: str
    kills: int = 0
    executions: int = 0
    lost: int = 0
    duplicated: int = 0
    stuck: int = 0
    handler_retries: int = 0
    worker_losses: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.stuck or self.problems)


class ChaosStack:
    """Temporal (SQLite file), workers and the API, each a process that can be killed and restarted."""

    def __init__(self, tmp: Path, *, workers: int = 2, heartbeat: str = "2s"):
        self.tmp = tmp
        self.temporal_port, self.ui_port, self.api_port = free_ports(3)
        self.settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            data_dir=tmp / "data",
            temporal_address=f"127.0.0.1:{self.temporal_port}",
            task_queue="chaos",
            handler_paths=str(REPO),
            heartbeat_timeout=heartbeat,
            api_port=self.api_port,
            read_roots=str(tmp),
        )
        self.n_workers = workers
        self.temporal: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.api: subprocess.Popen[bytes] | None = None
        self.client: Client | None = None
        self.url = f"http://127.0.0.1:{self.api_port}"
        self.spawned = 0

    # -- processes --------------------------------------------------------------------------------
    def _spawn(self, cmd: list[str], env: dict[str, str] | None, name: str) -> subprocess.Popen[bytes]:
        self.spawned += 1
        with (self.tmp / f"{name}-{self.spawned}.log").open("ab") as fh:
            return subprocess.Popen(
                cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    async def start_temporal(self) -> None:
        cmd = temporal_dev_command(self.settings, self.temporal_port, self.ui_port, self.tmp / "temporal.db")
        self.temporal = self._spawn(cmd, None, "temporal")
        self.client = await wait_for_temporal(
            self.temporal, self.settings, self.tmp / f"temporal-{self.spawned}.log"
        )

    def kill_temporal(self) -> None:
        assert self.temporal is not None
        self.temporal.send_signal(signal.SIGKILL)
        self.temporal.wait()

    def _env(self) -> dict[str, str]:
        env = child_env(self.settings)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env["SLUICE_API_PORT"] = str(self.api_port)
        env["SLUICE_READ_ROOTS"] = str(self.tmp)
        return env

    def start_worker(self) -> None:
        self.workers.append(self._spawn(WORKER_COMMAND, self._env(), "worker"))

    def kill_a_worker(self, rng: random.Random) -> None:
        alive = [w for w in self.workers if w.poll() is None]
        victim = rng.choice(alive)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        self.workers.remove(victim)

    async def start_api(self) -> None:
        self.api = self._spawn([sys.executable, "-m", "sluice", "api"], self._env(), "api")
        async with httpx.AsyncClient() as http:
            for _ in range(400):
                try:
                    if (await http.get(f"{self.url}/health")).status_code == 200:
                        return
                except httpx.HTTPError:
                    await asyncio.sleep(0.05)
        raise RuntimeError(f"the API did not start; see {self.tmp}")

    def kill_api(self) -> None:
        assert self.api is not None
        self.api.send_signal(signal.SIGKILL)
        self.api.wait()

    async def stop(self) -> None:
        for proc in [self.api, *self.workers]:
            await terminate(proc, grace=10)
        await terminate(self.temporal, grace=10)

    # -- reading the outcome ---------------------------------------------------------------------
    def storage(self) -> Path:
        return self.tmp / "data" / "storage"

    def bulk_replay(self, execution_id: str, objects: int) -> dict[str, Any]:
        """Add `objects` one-byte objects to the run's `copied` stage; the body of a detached
        replay of that stage (the run's copies and these) into `sink`."""
        bulk = self.storage() / execution_id / "copied" / "bulk"
        bulk.mkdir(parents=True)
        for i in range(objects):
            (bulk / f"{i:06d}.txt").write_text("x")
        return {"from_execution_id": execution_id, "from_stage": "copied", "to_route": "sink"}

    def objects(self, execution_id: str, stage: str) -> list[str]:
        root = self.storage() / execution_id / stage
        return sorted(p.name for p in root.rglob("*") if p.is_file() and not p.name.endswith(".meta.json"))

    def sidecars(self, execution_id: str, stage: str) -> int:
        return len(list((self.storage() / execution_id / stage).rglob("*.meta.json")))

    async def lineage_rows(self, execution_id: str) -> int:
        """Its lineage rows as readers see them: a replay's handled batches expanded into the rows
        of the messages they handled (a batch recorded twice would count twice)."""
        engine = create_engine(self.settings)
        try:
            async with session_factory(engine)() as session:
                return len(await lineage_rows(session, execution_id))
        finally:
            await engine.dispose()

    async def orphans(self) -> list[str]:
        """Records `running` without a live workflow, and Sluice workflows without a record."""
        assert self.client is not None
        engine = create_engine(self.settings)
        try:
            async with session_factory(engine)() as session:
                records = list((await session.exec(select(ExecutionRecord))).all())
        finally:
            await engine.dispose()
        problems = []
        known = {r.workflow_id for r in records}
        for record in records:
            with contextlib.suppress(Exception):
                desc = await self.client.get_workflow_handle(record.workflow_id).describe()
                if record.status == "running" and desc.status != WorkflowExecutionStatus.RUNNING:
                    problems.append(f"{record.id} says running, its workflow is {desc.status}")
                continue
            if record.status == "running":
                problems.append(f"{record.id} says running and has no workflow")
        async for wf in self.client.list_workflows("WorkflowType = 'ExecutionWorkflow'"):
            if wf.id not in known:
                problems.append(f"workflow {wf.id} has no record")
        return problems


@contextlib.asynccontextmanager
async def chaos_stack(tmp: Path, *, workers: int = 2, heartbeat: str = "2s") -> AsyncIterator[ChaosStack]:
    stack = ChaosStack(tmp, workers=workers, heartbeat=heartbeat)
    try:
        await stack.start_temporal()
        await upgrade_database(stack.settings)
        for _ in range(workers):
            stack.start_worker()
        await stack.start_api()
        yield stack
    finally:
        await stack.stop()


async def start_run(stack: ChaosStack, sleep: float) -> tuple[str, float]:
    async with httpx.AsyncClient(base_url=stack.url, timeout=60) as http:
        config = await http.post(
            "/api/v1/configs",
            content=PIPELINE.format(count=MESSAGES, sleep=sleep),
            headers={"Content-Type": "application/yaml"},
        )
        config.raise_for_status()
        run = await http.post(f"/api/v1/configs/{config.json()['id']}/run")
        run.raise_for_status()
        return run.json()["id"], time.monotonic()


async def wait_done(stack: ChaosStack, execution_id: str, timeout: float) -> dict[str, Any] | None:
    """The execution once it left `running` (None: stuck), read through the API (which reconciles)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                body = (await http.get(f"/api/v1/executions/{execution_id}")).json()
                if body.get("status") not in (None, "running"):
                    return body
            await asyncio.sleep(0.2)
    return None


async def check_run(stack: ChaosStack, execution_id: str, result: Round, timeout: float) -> None:
    """Exactly once: objects, sidecars, lineage and route counts of one fan-out run."""
    done = await wait_done(stack, execution_id, timeout)
    result.executions += 1
    if done is None:
        result.stuck += 1
        return
    if done["status"] != "completed":
        result.problems.append(f"{execution_id} ended {done['status']}: {done.get('error')}")
    expected = [f"item-{i:05d}.txt" for i in range(MESSAGES)]
    for stage in ("raw", "copied"):
        names = stack.objects(execution_id, stage)
        result.lost += len(set(expected) - set(names))
        result.duplicated += len(names) - len(set(names)) + len(set(names) - set(expected))
        if stack.sidecars(execution_id, stage) != len(names):
            result.problems.append(
                f"{stage}: {stack.sidecars(execution_id, stage)} sidecars for {len(names)} objects"
            )
    rows = await stack.lineage_rows(execution_id)
    expected_rows = 1 + 2 * MESSAGES  # the init message, one message per object to copy, one record per copy
    if rows != expected_rows:
        result.problems.append(f"lineage has {rows} rows, expected {expected_rows}")
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
        routes = {
            r["route"]: r
            for r in (await http.get(f"/api/v1/executions/{execution_id}/routes")).json()["routes"]
        }
    copy = routes["copy"]
    if (copy["messages_in"], copy["messages_processed"], copy["objects_written"]) != (
        MESSAGES,
        MESSAGES,
        MESSAGES,
    ):
        result.problems.append(f"copy counted {copy}")
    result.handler_retries += sum(r["retries"] for r in routes.values())
    result.worker_losses += sum(r["worker_losses"] for r in routes.values())


# -- scenarios --------------------------------------------------------------------------------------
async def worker_kills(tmp: Path, *, kills: int = 5, sleep: float = 0.25, seed: int = 0) -> Round:
    """SIGKILL random workers while the fan-out runs; a new worker replaces each."""
    result = Round("worker SIGKILLs")
    rng = random.Random(seed)
    async with chaos_stack(tmp) as stack:
        execution_id, started = await start_run(stack, sleep)
        for _ in range(kills):
            await asyncio.sleep(rng.uniform(0.4, 1.2))
            stack.kill_a_worker(rng)
            result.kills += 1
            stack.start_worker()
        await check_run(stack, execution_id, result, timeout=180)
        result.problems += await stack.orphans()
        result.seconds = time.monotonic() - started
    return result


async def temporal_restart(tmp: Path, *, sleep: float = 0.2) -> Round:
    """SIGKILL the Temporal server mid-run and start it again on its SQLite file."""
    result = Round("Temporal kill + restart")
    async with chaos_stack(tmp) as stack:
        execution_id, started = await start_run(stack, sleep)
        await asyncio.sleep(2.0)
        stack.kill_temporal()
        result.kills += 1
        await asyncio.sleep(2.0)
        await stack.start_temporal()
        await check_run(stack, execution_id, result, timeout=240)
        assert stack.client is not None
        runs = [wf async for wf in stack.client.list_workflows(f"WorkflowId = 'sluice-exec-{execution_id}'")]
        if sum(1 for wf in runs if wf.status == WorkflowExecutionStatus.RUNNING):
            result.problems.append("a run of the workflow is still running")
        result.problems += await stack.orphans()
        result.seconds = time.monotonic() - started
    return result


async def api_kills(tmp: Path, *, sleep: float = 0.1, replay_objects: int = 20_000) -> Round:
    """SIGKILL the API mid-run, and again in the middle of a replay request (while it publishes)."""
    result = Round("API SIGKILLs")
    async with chaos_stack(tmp) as stack:
        execution_id, started = await start_run(stack, sleep)
        await asyncio.sleep(1.0)
        stack.kill_api()
        result.kills += 1
        await stack.start_api()
        await check_run(stack, execution_id, result, timeout=180)

        body = stack.bulk_replay(execution_id, replay_objects)  # takes a few seconds to publish
        async with httpx.AsyncClient(base_url=stack.url, timeout=120) as http:
            request = asyncio.create_task(http.post("/api/v1/replay", json=body))
            await asyncio.sleep(0.8)
            stack.kill_api()
            result.kills += 1
            with contextlib.suppress(httpx.HTTPError):
                await request
        await stack.start_api()
        async with httpx.AsyncClient(base_url=stack.url, timeout=60) as http:
            replays = (await http.get("/api/v1/executions", params={"trigger": "detached-replay"})).json()[
                "items"
            ]
        for replay in replays:
            result.executions += 1
            if await wait_done(stack, replay["id"], timeout=240) is None:
                result.stuck += 1
        result.problems += await stack.orphans()
        result.seconds = time.monotonic() - started
    return result


async def replay_worker_kills(
    tmp: Path, *, kills: int = 4, replay_objects: int = 20_000, seed: int = 0
) -> Round:
    """SIGKILL every worker while a replay publishes its keys (or, if that was quicker than the
    first look, while its route's first batches derive and handle them), then random ones."""
    result = Round("worker SIGKILLs mid-replay")
    rng = random.Random(seed)
    async with chaos_stack(tmp) as stack:
        execution_id, started = await start_run(stack, 0.0)
        await check_run(stack, execution_id, result, timeout=180)
        body = stack.bulk_replay(execution_id, replay_objects)
        expected = replay_objects + MESSAGES  # the bulk objects and the run's own copies
        async with httpx.AsyncClient(base_url=stack.url, timeout=60) as http:
            started_replay = await http.post("/api/v1/replay", json=body, headers={"Prefer": "respond-async"})
            started_replay.raise_for_status()
            replay_id = started_replay.json()["id"]
            assert stack.client is not None
            handle = stack.client.get_workflow_handle(f"sluice-exec-{replay_id}")
            # First every worker at once while the keys are published or the first batches run (so
            # that activity is lost for sure and runs again), then random ones while the rest runs.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not any(
                a.activity_type.name in TARGETS
                and a.attempt == 1
                and a.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
                for a in (await handle.describe()).raw_description.pending_activities
            ):
                await asyncio.sleep(0.02)
            for _ in range(stack.n_workers):
                stack.kill_a_worker(rng)
            for _ in range(stack.n_workers):
                stack.start_worker()
            result.kills += stack.n_workers
            for _ in range(kills - stack.n_workers):
                await asyncio.sleep(rng.uniform(0.2, 0.6))
                stack.kill_a_worker(rng)
                result.kills += 1
                stack.start_worker()
            result.executions += 1
            done = await wait_done(stack, replay_id, timeout=240)
            if done is None:
                result.stuck += 1
            else:
                counts = done.get("replay") or {}
                if done["status"] != "completed" or (
                    counts.get("objects_found"),
                    counts.get("objects_published"),
                ) != (expected, expected):
                    result.problems.append(f"replay {replay_id} ended {done['status']} with {counts}")
                sink = next(
                    r
                    for r in (await http.get(f"/api/v1/executions/{replay_id}/routes")).json()["routes"]
                    if r["route"] == "sink"
                )
                handled = sink["messages_processed"]
                rows = await stack.lineage_rows(replay_id)  # one per published message
                result.lost += max(expected - handled, 0) + max(expected - rows, 0)
                result.duplicated += max(handled - expected, 0) + max(rows - expected, 0)
                result.worker_losses += sink["worker_losses"]
                result.handler_retries += sink["retries"]
                history = await handle.fetch_history()
                targets = {
                    e.event_id
                    for e in history.events
                    if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
                    and e.activity_task_scheduled_event_attributes.activity_type.name in TARGETS
                }
                if not any(
                    e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
                    and e.activity_task_started_event_attributes.scheduled_event_id in targets
                    and e.activity_task_started_event_attributes.attempt > 1
                    for e in history.events
                ):
                    result.problems.append(
                        "no publishing or batch was interrupted: the kills missed the replay"
                    )
        result.problems += await stack.orphans()
        result.seconds = time.monotonic() - started
    return result


TARGETS = (PUBLISH_REPLAY_KEYS, RUN_ROUTE)  # what the first kills of a replay round must interrupt

SCENARIOS = {
    "workers": worker_kills,
    "temporal": temporal_restart,
    "api": api_kills,
    "replay": replay_worker_kills,
}


def render(rounds: list[Round]) -> str:
    head = f"{'scenario':<26} {'kills':>5} {'execs':>5} {'lost':>5} {'dup':>5} {'stuck':>5} {'h.retries':>9} {'w.losses':>8} {'s':>6}"
    lines = [head]
    for r in rounds:
        lines.append(
            f"{r.scenario:<26} {r.kills:>5} {r.executions:>5} {r.lost:>5} {r.duplicated:>5} {r.stuck:>5} "
            f"{r.handler_retries:>9} {r.worker_losses:>8} {r.seconds:>6.1f}"
        )
        lines += [f"    ! {p}" for p in r.problems]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> list[Round]:
    rounds = []
    deadline = time.monotonic() + args.minutes * 60
    for n in range(args.rounds):
        for name in args.scenarios.split(","):
            with tempfile.TemporaryDirectory(prefix="sluice-chaos-") as tmp:
                if name == "workers":
                    result = await worker_kills(Path(tmp), kills=args.kills, seed=n)
                else:
                    result = await SCENARIOS[name](Path(tmp))
            rounds.append(result)
            print(render([result]).splitlines()[1], file=sys.stderr, flush=True)
        if time.monotonic() > deadline:
            break
    return rounds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kills", type=int, default=6, help="worker SIGKILLs per worker round")
    parser.add_argument("--scenarios", default="workers,temporal,api,replay")
    parser.add_argument("--minutes", type=float, default=6.0, help="stop starting rounds after this")
    parser.add_argument("--json", type=Path, help="also write the rounds as JSON here")
    args = parser.parse_args(argv)
    rounds = asyncio.run(main_async(args))
    print(render(rounds))
    total = Round("total")
    for r in rounds:
        for key in ("kills", "executions", "lost", "duplicated", "stuck", "handler_retries", "worker_losses"):
            setattr(total, key, getattr(total, key) + getattr(r, key))
    print(
        f"\n{total.kills} kills, {total.executions} executions: {total.lost} lost, {total.duplicated} duplicated, "
        f"{total.stuck} stuck, {total.handler_retries} handler retries spent, {total.worker_losses} worker losses"
    )
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rounds], indent=2))
    return 0 if all(r.ok for r in rounds) else 1


if __name__ == "__main__":
    sys.exit(main())
