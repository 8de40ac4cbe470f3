"""Fan-out at default settings: one message stores N objects, a second route handles each of them.

    python bench/bench_fanout.py [-n 1000,10000] [--temporal-db file|memory] [--json]

Stack as in bench_executions.py (bench/stack.py: Temporal dev server subprocess with its SQLite
file, the Sluice worker subprocess, the API in this process). Pipeline: `load`
(`bench.handlers:emit_items`, stage `raw`) stores `count` one-byte objects one after the other with
`ctx.emit`; each object becomes a message to `sink` (the built-in `noop`). Neither route sets
`batch_size`, `concurrency` or anything else: Sluice's defaults.

Per N: objects/s = N / (trigger -> workflow result), following continue-as-new; CPU per 1,000
objects of the worker, Temporal and this process (API); the worker's peak RSS during the run
(reset first). Checked outside the clock: the execution reads `completed`, `objects_written == N`,
and `sink` processed N messages. The plain baseline, timed in the same run: writing the same N
objects and their sidecars as files in a loop, nothing else (what the disk costs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import sluice  # noqa: E402
from bench.stack import (  # noqa: E402
    Stack,
    bench_settings,
    bench_stack,
    cancel_on_sigterm,
    isolated_run,
    log,
    memory_kib,
    process_cpu,
    reset_peak_rss,
    run_main,
    temporal_version,
    until_stack_fails,
)

QUEUE = "sluice-bench-fanout"


def pipeline_yaml(objects: int) -> str:
    return f"""\
name: bench-fanout-{objects}
namespace: bench
layer: bench
description: one message stores {objects} objects, each handled by a no-op route (bench/bench_fanout.py)
init_message:
  route: load
  payload: {{count: {objects}}}
routes:
  - name: load
    handler: bench.handlers:emit_items
    stage: raw
    next: [sink]
  - name: sink
    handler: noop
"""


def plain_writes(objects: int) -> float:
    """Seconds to write N one-byte files and N small JSON sidecars in a loop: the disk's own cost."""
    with tempfile.TemporaryDirectory(prefix="sluice-bench-plain-") as tmp:
        root = Path(tmp) / "raw"
        root.mkdir()
        meta = json.dumps({"key": "x" * 60, "size": 1, "sha256": "0" * 64}, indent=2).encode()
        t0 = time.perf_counter()
        for i in range(objects):
            (root / f"item-{i:06d}.txt").write_bytes(b"x")
            (root / f"item-{i:06d}.txt.meta.json").write_bytes(meta)
        return time.perf_counter() - t0


async def run_fanout(stack: Stack, objects: int, timeout: float) -> dict[str, Any]:
    resp = await stack.http.post(
        "/api/v1/configs", content=pipeline_yaml(objects), headers={"Content-Type": "application/yaml"}
    )
    if resp.status_code not in (200, 201):
        raise RuntimeError(f"POST /api/v1/configs: {resp.status_code} {resp.text[:1000]}")
    config_id = resp.json()["id"]
    pids = stack.pids
    reset_peak_rss(pids["sluice-worker"])
    rss_before = memory_kib(pids["sluice-worker"], "VmRSS")
    cpu0 = {name: process_cpu(pid) for name, pid in pids.items()}
    t0 = time.time()
    resp = await stack.http.post(f"/api/v1/configs/{config_id}/run")
    if resp.status_code != 200:
        raise RuntimeError(f"POST run: {resp.status_code} {resp.text[:1000]}")
    body = resp.json()
    await asyncio.wait_for(stack.client.get_workflow_handle(body["workflow_id"]).result(), timeout)
    seconds = time.time() - t0
    cpu = {name: process_cpu(pid) - cpu0[name] for name, pid in pids.items()}
    peak = memory_kib(pids["sluice-worker"], "VmHWM")
    execution = (await stack.http.get(f"/api/v1/executions/{body['id']}")).json()
    if execution.get("status") != "completed" or execution.get("objects_written") != objects:
        raise RuntimeError(f"fan-out of {objects}: execution reads {execution}")
    routes = {
        r["route"]: r
        for r in (await stack.http.get(f"/api/v1/executions/{body['id']}/routes")).json()["routes"]
    }
    sink = routes.get("sink") or {}
    if (sink.get("messages_in"), sink.get("messages_processed")) != (objects, objects):
        raise RuntimeError(f"fan-out of {objects}: route sink reads {sink}")
    load = routes.get("load") or {}
    emit_s = (
        datetime.fromisoformat(load["completed_at"]) - datetime.fromisoformat(load["started_at"])
    ).total_seconds()
    return {
        "objects": objects,
        "seconds": seconds,
        "objects_per_s": objects / seconds,
        "cpu_ms_per_1k": {name: value * 1e6 / objects for name, value in cpu.items()},
        "worker_rss_mib": rss_before / 1024,
        "worker_peak_rss_mib": peak / 1024,
        "emit_seconds": emit_s,
    }


async def measure(stack: Stack, args: argparse.Namespace) -> list[dict[str, Any]]:
    log("warm-up: a fan-out of 20 objects (discarded) ...")
    await run_fanout(stack, 20, args.timeout)
    results = []
    for n in args.objects:
        log(f"fan-out of {n:,} objects ...")
        result = await run_fanout(stack, n, args.timeout)
        plain = plain_writes(n)
        result["plain_objects_per_s"] = n / plain
        log(f"  {result['objects_per_s']:,.0f} objects/s (plain file writes: {n / plain:,.0f}/s)")
        results.append(result)
    return results


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    cancel_on_sigterm()
    meta = {
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "python": platform.python_version(),
        "sluice": sluice.__version__,
        "temporal": temporal_version(),
        "cpus": os.cpu_count(),
        "args": {"objects": args.objects, "temporal_db": args.temporal_db},
    }
    with isolated_run() as tmp:
        log(f"starting the stack in {tmp} ...")
        async with bench_stack(bench_settings(tmp, QUEUE), tmp, args.temporal_db) as stack:
            try:
                results = await until_stack_fails(stack, measure(stack, args))
            except BaseException:
                stack.dump_logs()
                raise
    return {"meta": meta, "results": results}


def render(report: dict[str, Any]) -> str:
    meta = report["meta"]
    lines = [
        f"Fan-out at default settings — {meta['timestamp']}, python {meta['python']}, temporal "
        f"{meta['temporal']}, sluice {meta['sluice']}, {meta['cpus']} CPU(s)",
        "pipeline: load (ctx.emit of N one-byte objects, one after the other) -> sink (noop), defaults",
        "",
        "| objects | seconds | objects/s | plain file writes/s | ratio | CPU ms / 1k objects "
        "(worker / Temporal / API) | worker RSS before → peak (MiB) | of which emitting (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        cpu = r["cpu_ms_per_1k"]
        lines.append(
            f"| {r['objects']:,} | {r['seconds']:.1f} | {r['objects_per_s']:,.0f} | "
            f"{r['plain_objects_per_s']:,.0f} | {r['objects_per_s'] / r['plain_objects_per_s']:.3f} | "
            f"{cpu['sluice-worker']:,.0f} / {cpu['temporal']:,.0f} / {cpu['bench']:,.0f} | "
            f"{r['worker_rss_mib']:.0f} → {r['worker_peak_rss_mib']:.0f} | {r['emit_seconds']:.1f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "-n",
        "--objects",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[1000, 10000],
        help="comma-separated fan-out sizes (default 1000,10000; add 100000 for the linearity check)",
    )
    parser.add_argument("--temporal-db", choices=["file", "memory"], default="file")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per fan-out")
    parser.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    args = parser.parse_args(argv)
    if not args.objects or min(args.objects) < 1 or len(set(args.objects)) < len(args.objects):
        parser.error("-n takes distinct positive sizes, e.g. 1000,10000")
    return args


def main(argv: list[str] | None = None) -> int:
    return run_main(main_async, render, parse_args(argv), "fanout")


if __name__ == "__main__":
    sys.exit(main())
