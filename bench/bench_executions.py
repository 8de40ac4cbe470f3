"""Sluice vs raw Temporal: the same 3-step no-op pipeline, measured in one run on one stack.

    python bench/bench_executions.py [-n N] [-m M] [-c C] [-r ROUNDS] [--temporal-db file|memory]
                                     [--breakdown] [--json]

Stack, started the way `sluice dev` does it (mirrors sluice.runtime.devstack.embedded_stack): a `temporal
server start-dev` subprocess with a SQLite file in a temp dir (`--temporal-db memory` drops the
file), the Sluice worker as a subprocess (`python -m sluice.runtime.cli worker`) and the Sluice API
(uvicorn) in this process. The raw baseline runs its own worker subprocess
(`python -m bench.raw_worker`) against the same Temporal server.

Sluice: trigger = HTTP POST /api/v1/configs/{id}/run; completion = the Temporal result of the
execution's workflow (handle.result() on the workflow id the API returns), the same long-poll the
raw baseline uses, so neither side pays a polling interval. Raw: trigger = client.start_workflow;
completion = handle.result().

Per round: M sequential executions of each system, interleaved one by one (latency: trigger ->
first step's handler start, wall clock recorded by the handler), then N executions of each with
C in flight (throughput: N / (last completion - first trigger)). Rounds alternate which system
goes first; figures pool all rounds, and the ratios come from this one run only.

--breakdown measures three more ways of starting executions, to show where Sluice's cost on top
of Temporal goes: `ExecutionService.run_config` called in this process (the record and the
workflow start without HTTP); the workflow started directly with the input the API would build
(no record: its finalize finds none); and the floor of any REST facade: the raw workflow started
by a one-endpoint FastAPI app served by uvicorn in this process, triggered with httpx like
Sluice (`facade_app`). Their rounds run beside the other two.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import temporalio  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from temporalio.client import Client  # noqa: E402

import sluice  # noqa: E402
from bench.handlers import MARKS_ENV, read_marks  # noqa: E402
from bench.raw_workflow import RAW_WORKFLOW  # noqa: E402
from bench.stack import (  # noqa: E402
    RAW_QUEUE,
    bench_settings,
    bench_stack,
    cancel_on_sigterm,
    isolated_run,
    log,
    process_cpu,
    run_main,
    served,
    temporal_version,
    until_stack_fails,
)
from sluice.ids import uuid7  # noqa: E402
from sluice.runtime.devstack import free_ports  # noqa: E402
from sluice.services.configs import ConfigText  # noqa: E402
from sluice.services.executions import ExecutionService, new_run  # noqa: E402
from sluice.workflow_io import WORKFLOW_NAME  # noqa: E402

SLUICE_QUEUE = "sluice-bench"
RUN_TIMEOUT = 60.0

PIPELINE_YAML = """\
name: bench-noop-3
namespace: bench
layer: bench
description: 3 no-op routes in a row (bench/bench_executions.py)
init_message:
  route: first
  payload: {n: 1}
routes:
  - name: first
    handler: bench.handlers:first
    next: [second]
  - name: second
    handler: noop
    next: [third]
  - name: third
    handler: noop
"""


def arrangement(temporal_db: str) -> str:
    persistence = (
        "SQLite file in a temp dir, as `sluice dev`" if temporal_db == "file" else "in-memory SQLite"
    )
    return (
        f"Temporal dev server subprocess (`temporal server start-dev`, {persistence}); Sluice worker "
        "subprocess (`python -m sluice.runtime.cli worker`) and Sluice API (uvicorn, in the benchmark process; "
        "SQLite DB and local-file storage in the temp dir) started like `sluice dev` "
        "(sluice.runtime.devstack.embedded_stack), triggered over HTTP with httpx. Raw baseline: its own "
        "worker subprocess (`python -m bench.raw_worker`, same max_concurrent_activities, pydantic "
        "converter) on the same server, triggered with client.start_workflow. Completion for both: "
        "Temporal workflow result (handle.result()), no polling."
    )


# -- measurement primitives ------------------------------------------------------------------
@dataclass
class Run:
    key: str  # execution id (Sluice) or workflow id (raw): what the first step records under
    trigger: float  # wall clock just before the trigger call
    returned: float  # the trigger call returned (HTTP 200 / start_workflow done)
    done: float  # workflow result received
    first: float | None = None  # first step's handler started (from the marks file)


@dataclass
class Target:
    name: str
    worker: str  # which worker process serves it: "raw-worker" or "sluice-worker"
    run_one: Callable[[], Awaitable[Run]]
    verify: Callable[[list[Run]], Awaitable[None]]
    latency: list[Run] = field(default_factory=list)
    throughput: list[Run] = field(default_factory=list)
    rounds: list[dict[str, Any]] = field(default_factory=list)


CPU_PARTS = ("temporal", "worker", "bench")  # Temporal server, the system's worker, this process


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * p
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def dist(values: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(values, 0.5),
        "p90": percentile(values, 0.9),
        "mean": sum(values) / len(values) if values else float("nan"),
        "min": min(values) if values else float("nan"),
        "max": max(values) if values else float("nan"),
        "n": len(values),
    }


async def timed(target: Target) -> Run:
    try:
        return await asyncio.wait_for(target.run_one(), RUN_TIMEOUT)
    except TimeoutError:
        raise RuntimeError(f"{target.name}: an execution did not finish within {RUN_TIMEOUT:.0f}s") from None


def attach_marks(runs: list[Run], marks_file: Path, name: str) -> None:
    marks = read_marks(marks_file)
    missing = [r.key for r in runs if r.key not in marks]
    if missing:
        raise RuntimeError(
            f"{name}: {len(missing)} execution(s) recorded no first-step start, e.g. {missing[0]}"
        )
    for r in runs:
        r.first = marks[r.key]


async def concurrent(target: Target, count: int, concurrency: int) -> list[Run]:
    runs: list[Run] = []
    remaining = count

    async def lane() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            runs.append(await timed(target))

    await asyncio.gather(*(lane() for _ in range(min(concurrency, count))))
    return runs


# -- the two systems -------------------------------------------------------------------------
def raw_target(client: Client) -> Target:
    async def run_one() -> Run:
        key = f"bench-raw-{uuid.uuid4().hex}"
        t0 = time.time()
        handle = await client.start_workflow(RAW_WORKFLOW, {"key": key}, id=key, task_queue=RAW_QUEUE)
        t1 = time.time()
        result = await handle.result()
        t2 = time.time()
        if not isinstance(result, dict) or result.get("key") != key:
            raise RuntimeError(f"raw workflow {key} returned {result!r}")
        return Run(key, t0, t1, t2)

    async def verify(runs: list[Run]) -> None:  # handle.result() returning is the proof
        return None

    return Target("raw Temporal", "raw-worker", run_one, verify)


def sluice_target(client: Client, http: httpx.AsyncClient, config_id: str) -> Target:
    async def run_one() -> Run:
        t0 = time.time()
        resp = await http.post(f"/api/v1/configs/{config_id}/run")
        t1 = time.time()
        if resp.status_code != 200:
            raise RuntimeError(f"POST run: {resp.status_code} {resp.text[:500]}")
        body = resp.json()
        await client.get_workflow_handle(body["workflow_id"]).result()
        t2 = time.time()
        return Run(body["id"], t0, t1, t2)

    async def verify(runs: list[Run]) -> None:
        """Outside the timed part: every execution must read `completed` through the API."""
        for r in runs:
            resp = await http.get(f"/api/v1/executions/{r.key}")
            status = resp.json().get("status") if resp.status_code == 200 else resp.status_code
            if status != "completed":
                raise RuntimeError(f"Sluice execution {r.key} is {status!r} after its workflow completed")

    return Target("Sluice", "sluice-worker", run_one, verify)


def service_target(client: Client, executions: ExecutionService, config_id: str) -> Target:
    """What POST run does, called in this process: the record, then the workflow start (no HTTP)."""

    async def run_one() -> Run:
        t0 = time.time()
        record = await executions.run_config(config_id, triggered_by="bench")
        t1 = time.time()
        await client.get_workflow_handle(record.workflow_id).result()
        return Run(record.id, t0, t1, time.time())

    async def verify(runs: list[Run]) -> None:  # handle.result() returning is the proof
        return None

    return Target("Sluice service call", "sluice-worker", run_one, verify)


def workflow_target(client: Client, executions: ExecutionService, config: ConfigText) -> Target:
    """Sluice's workflow alone: started with the input the API builds, no record written."""

    async def run_one() -> Run:
        t0 = time.time()
        execution_id = str(uuid7())
        _record, launch = executions.plan(new_run(config, execution_id, trigger="manual"))
        handle = await client.start_workflow(WORKFLOW_NAME, launch.input, **launch.options())
        t1 = time.time()
        await handle.result()
        return Run(execution_id, t0, t1, time.time())

    async def verify(runs: list[Run]) -> None:
        return None

    return Target("Sluice workflow only", "sluice-worker", run_one, verify)


def facade_app(client: Client) -> FastAPI:
    """The least a REST facade over Temporal can do: one FastAPI endpoint that starts the raw
    workflow and answers its id (no record, no validation beyond FastAPI's own)."""
    app = FastAPI()

    @app.post("/start")
    async def start() -> dict[str, str]:
        key = f"bench-facade-{uuid.uuid4().hex}"
        await client.start_workflow(RAW_WORKFLOW, {"key": key}, id=key, task_queue=RAW_QUEUE)
        return {"workflow_id": key}

    return app


def facade_target(client: Client, http: httpx.AsyncClient) -> Target:
    """The raw workflow started through `facade_app` over HTTP: the floor of any REST facade."""

    async def run_one() -> Run:
        t0 = time.time()
        resp = await http.post("/start")
        t1 = time.time()
        if resp.status_code != 200:
            raise RuntimeError(f"POST /start: {resp.status_code} {resp.text[:500]}")
        key = resp.json()["workflow_id"]
        await client.get_workflow_handle(key).result()
        return Run(key, t0, t1, time.time())

    async def verify(runs: list[Run]) -> None:  # handle.result() returning is the proof
        return None

    return Target("bare FastAPI facade", "raw-worker", run_one, verify)


# -- the run ---------------------------------------------------------------------------------
async def benchmark(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    marks_file = tmp / "marks.txt"
    os.environ[MARKS_ENV] = str(marks_file)  # both workers inherit our environment
    settings = bench_settings(tmp, SLUICE_QUEUE)
    log(f"starting the stack in {tmp} (Temporal persistence: {args.temporal_db}) ...")
    async with (
        bench_stack(settings, tmp, args.temporal_db, http_timeout=RUN_TIMEOUT) as stack,
        contextlib.AsyncExitStack() as extra,
    ):
        try:
            resp = await stack.http.post(
                "/api/v1/configs", content=PIPELINE_YAML, headers={"Content-Type": "application/yaml"}
            )
            if resp.status_code != 201:
                raise RuntimeError(f"POST /api/v1/configs: {resp.status_code} {resp.text[:1000]}")
            config_id = resp.json()["id"]
            targets = [raw_target(stack.client), sluice_target(stack.client, stack.http, config_id)]
            if args.breakdown:
                executions = stack.app.state.services.executions
                facade = await extra.enter_async_context(
                    served(facade_app(stack.client), free_ports(1)[0], RUN_TIMEOUT)
                )
                targets += [
                    service_target(stack.client, executions, config_id),
                    workflow_target(stack.client, executions, await executions.configs.current(config_id)),
                    facade_target(stack.client, facade),
                ]
            # Fail fast (instead of after RUN_TIMEOUT) when a worker or Temporal dies.
            return await until_stack_fails(stack, measure(args, targets, marks_file, stack.pids))
        except Exception:
            stack.dump_logs()
            raise


async def measure(
    args: argparse.Namespace, targets: list[Target], marks_file: Path, pids: dict[str, int]
) -> dict[str, Any]:
    """`targets`: raw Temporal, Sluice over HTTP, then the --breakdown ones."""
    log(f"warm-up: {args.warmup} execution(s) each (discarded) ...")
    for _ in range(args.warmup):
        for target in targets:
            await timed(target)
    for rnd in range(args.rounds):
        order = targets if rnd % 2 == 0 else targets[::-1]
        log(f"round {rnd + 1}/{args.rounds}: {args.latency_runs} sequential executions each, interleaved ...")
        batch: dict[str, list[Run]] = {target.name: [] for target in targets}
        for i in range(args.latency_runs):
            for target in order if i % 2 == 0 else order[::-1]:
                batch[target.name].append(await timed(target))
        for target in order:
            await target.verify(batch[target.name])
            attach_marks(batch[target.name], marks_file, target.name)
            target.latency += batch[target.name]
        for target in order:
            log(
                f"round {rnd + 1}/{args.rounds}: {target.name}: {args.executions} executions, "
                f"{args.concurrency} in flight ..."
            )
            procs = {"temporal": pids["temporal"], "worker": pids[target.worker], "bench": pids["bench"]}
            before = {part: process_cpu(pid) for part, pid in procs.items()}
            runs = await concurrent(target, args.executions, args.concurrency)
            after = {part: process_cpu(pid) for part, pid in procs.items()}
            await target.verify(runs)  # not timed, not in the CPU figures
            attach_marks(runs, marks_file, target.name)
            elapsed = max(r.done for r in runs) - min(r.trigger for r in runs)
            target.rounds.append(
                {
                    "executions": len(runs),
                    "seconds": elapsed,
                    "executions_per_s": len(runs) / elapsed,
                    "cpu_s": {part: after[part] - before[part] for part in CPU_PARTS},
                }
            )
            target.throughput += runs
            log(f"  {len(runs) / elapsed:.1f} executions/s")
    raw, slu, *breakdown = targets
    figures: dict[str, Any] = {"raw": summarize(raw), "sluice": summarize(slu)}
    if breakdown:
        figures["breakdown"] = {target.name: summarize(target) for target in [slu, *breakdown]}
    return figures


def summarize(target: Target) -> dict[str, Any]:
    def ms(runs: list[Run], start: str, end: str) -> list[float]:
        return [(getattr(r, end) - getattr(r, start)) * 1000 for r in runs]

    total = sum(r["executions"] for r in target.rounds)
    seconds = sum(r["seconds"] for r in target.rounds)
    cpu_ms = {part: sum(r["cpu_s"][part] for r in target.rounds) * 1000 / total for part in CPU_PARTS}
    return {
        "executions_per_s": total / seconds,
        "cpu_ms_per_execution": {**cpu_ms, "total": sum(cpu_ms.values())},
        "throughput_rounds": target.rounds,
        "first_route_ms": dist(ms(target.latency, "trigger", "first")),
        "trigger_call_ms": dist(ms(target.latency, "trigger", "returned")),
        "end_to_end_ms": dist(ms(target.latency, "trigger", "done")),
        "first_route_under_load_ms": dist(ms(target.throughput, "trigger", "first")),
        "end_to_end_under_load_ms": dist(ms(target.throughput, "trigger", "done")),
    }


# (label, where in a system's summary, key in "ratios")
ROWS: list[tuple[str, tuple[str, ...], str]] = [
    ("executions/s (C={c})", ("executions_per_s",), "throughput"),
    ("first-route p50 (ms)", ("first_route_ms", "p50"), "first_route_p50"),
    ("first-route p90 (ms)", ("first_route_ms", "p90"), "first_route_p90"),
    ("trigger call p50 (ms)", ("trigger_call_ms", "p50"), "trigger_call_p50"),
    ("end-to-end p50 (ms)", ("end_to_end_ms", "p50"), "end_to_end_p50"),
    ("end-to-end p90 (ms)", ("end_to_end_ms", "p90"), "end_to_end_p90"),
    ("first-route p50 at C={c} (ms)", ("first_route_under_load_ms", "p50"), "first_route_under_load_p50"),
    ("end-to-end p50 at C={c} (ms)", ("end_to_end_under_load_ms", "p50"), "end_to_end_under_load_p50"),
    ("CPU ms/execution at C={c}", ("cpu_ms_per_execution", "total"), "cpu_total"),
    ("  Temporal server", ("cpu_ms_per_execution", "temporal"), "cpu_temporal"),
    ("  worker process", ("cpu_ms_per_execution", "worker"), "cpu_worker"),
    ("  bench process (+ API)", ("cpu_ms_per_execution", "bench"), "cpu_bench"),
]


def dig(summary: dict[str, Any], path: tuple[str, ...]) -> float:
    value: Any = summary
    for part in path:
        value = value[part]
    return float(value)


def ratio(sluice_value: float, raw_value: float) -> float | None:
    if not raw_value or raw_value != raw_value or sluice_value != sluice_value:  # zero or NaN
        return None
    return sluice_value / raw_value


def render(report: dict[str, Any]) -> str:
    meta, params = report["meta"], report["params"]
    c = params["concurrency"]
    lines = [
        f"Sluice vs raw Temporal — 3-route no-op pipeline, {meta['timestamp']}, python {meta['python']}, "
        f"temporal CLI {meta['temporal_cli']}, temporalio {meta['temporalio']}, sluice {meta['sluice']}, "
        f"{meta['cpus']} CPU(s)",
        f"arrangement: {meta['arrangement']}",
        f"runs: {params['rounds']} round(s), order alternating; per round and system {params['latency_runs']} "
        f"sequential executions (latency) then {params['executions']} with {c} in flight (throughput); "
        f"{params['warmup']} warm-up execution(s) each discarded",
        "",
        f"{'':<30}{'raw Temporal':>14}{'Sluice':>12}{'ratio (Sluice/raw)':>22}",
    ]
    for label, path, key in ROWS:
        raw, slu, rat = dig(report["raw"], path), dig(report["sluice"], path), report["ratios"][key]
        rat_text = "-" if rat is None else f"{rat:.2f}"
        lines.append(f"{label.format(c=c):<30}{raw:>14.1f}{slu:>12.1f}{rat_text:>22}")
    per_round = "; ".join(
        f"{name} " + ", ".join(f"{r['executions_per_s']:.1f}" for r in report[key]["throughput_rounds"])
        for name, key in (("raw", "raw"), ("Sluice", "sluice"))
    )
    paired = [
        s["executions_per_s"] / r["executions_per_s"]
        for r, s in zip(
            report["raw"]["throughput_rounds"], report["sluice"]["throughput_rounds"], strict=True
        )
    ]
    # The rounds show how much of a difference the machine's noise alone makes within one run.
    lines += [
        "",
        f"executions/s per round: {per_round}; Sluice/raw per round: "
        + ", ".join(f"{p:.2f}" for p in paired)
        + f" (median {statistics.median(paired):.2f})",
    ]
    if "breakdown" in report:
        raw = report["raw"]
        lines += [
            "",
            f"breakdown (same run, {c} in flight): executions/s (ratio to raw), CPU ms/execution "
            "(Temporal / worker / bench process)",
        ]
        for name, summary in [("raw Temporal", raw), *report["breakdown"].items()]:
            cpu = summary["cpu_ms_per_execution"]
            lines.append(
                f"  {name:<24}{summary['executions_per_s']:>7.1f} ({summary['executions_per_s'] / raw['executions_per_s']:.2f})"
                f"   {cpu['temporal']:.1f} / {cpu['worker']:.1f} / {cpu['bench']:.1f}"
            )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "-n",
        "--executions",
        type=int,
        default=50,
        help="executions per round and system for throughput (default %(default)s)",
    )
    parser.add_argument(
        "-m",
        "--latency-runs",
        type=int,
        default=20,
        help="sequential executions per round and system for latency (default %(default)s)",
    )
    parser.add_argument(
        "-c", "--concurrency", type=int, default=10, help="executions in flight (default %(default)s)"
    )
    parser.add_argument(
        "-r",
        "--rounds",
        type=int,
        default=2,
        help="rounds; each flips which system goes first (default %(default)s)",
    )
    parser.add_argument(
        "-w",
        "--warmup",
        type=int,
        default=3,
        help="discarded warm-up executions per system (default %(default)s)",
    )
    parser.add_argument(
        "--temporal-db",
        choices=("file", "memory"),
        default="file",
        help="Temporal dev server persistence: SQLite file like `sluice dev`, or in memory (default %(default)s)",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also start the executions through the service (no HTTP), as bare workflows (no API), "
        "and the raw workflow through a one-endpoint FastAPI app (the floor of a REST facade)",
    )
    parser.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    args = parser.parse_args(argv)
    for name in ("executions", "latency_runs", "concurrency", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be at least 0")
    return args


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    cancel_on_sigterm()
    started = datetime.now(UTC)
    with isolated_run() as tmp:
        figures = await benchmark(args, tmp)
    ratios = {key: ratio(dig(figures["sluice"], path), dig(figures["raw"], path)) for _l, path, key in ROWS}
    return {
        "benchmark": "executions",
        "meta": {
            "timestamp": started.strftime("%Y-%m-%d %H:%M:%S UTC"),
            "python": platform.python_version(),
            "temporal_cli": temporal_version(),
            "temporalio": temporalio.__version__,
            "sluice": sluice.__version__,
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "arrangement": arrangement(args.temporal_db),
            "sluice_completion": "Temporal handle.result() on the workflow id returned by POST run",
            "raw_completion": "Temporal handle.result()",
        },
        "params": {
            "executions": args.executions,
            "latency_runs": args.latency_runs,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "temporal_db": args.temporal_db,
            "breakdown": args.breakdown,
        },
        **figures,
        "ratios": ratios,
    }


def main(argv: list[str] | None = None) -> int:
    return run_main(main_async, render, parse_args(argv), "executions")


if __name__ == "__main__":
    sys.exit(main())
