"""Replay benchmark: a detached replay of N stored objects into a no-op route, next to raw
Temporal's activity throughput measured in the same run, on the same stack.

    python bench/bench_replay.py [-n N] [--tuned-batch B] [--tuned-concurrency C] [-r ROUNDS] [--json]

Stack (bench.stack.bench_stack, as bench_executions.py): a `temporal server start-dev` subprocess
(SQLite file in a temp dir), the Sluice worker subprocess, the Sluice API (uvicorn) in this process,
and the raw baseline's worker subprocess (`python -m bench.raw_worker`) on the same server.

Setup (not timed): one execution whose init route (`bench.handlers:fanout`) stores N one-byte
objects in stage `raw`. Then, for each setting -- Sluice's defaults (batch_size 10, concurrency 4)
and a tuned one (--tuned-batch/--tuned-concurrency) -- and each round:

* Sluice: POST /api/v1/replay {from_execution_id, from_stage: raw, to_route} into a route using the
  built-in `noop` with that batch_size/concurrency. The call returns once every object is published
  as a message (the publish phase); completion is handle.result() on `sluice-exec-{id}`.
* raw: one workflow (bench/raw_replay_workflow.py) running one no-op activity per object, C in
  flight (C = the Sluice route's concurrency); completion is handle.result().
* raw batched: the same workflow with one activity per B object keys (B = the route's batch_size).

After each timed phase the benchmark checks the result: the Sluice execution reads `completed`,
its target route has messages_in == messages_processed == N, the raw workflows processed N keys.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import temporalio  # noqa: E402
from temporalio.api.enums.v1 import EventType  # noqa: E402
from temporalio.client import WorkflowHandle  # noqa: E402

import sluice  # noqa: E402
from bench.raw_replay_workflow import RAW_REPLAY_WORKFLOW, RawReplayJob, RawReplayResult  # noqa: E402
from bench.stack import (  # noqa: E402
    RAW_QUEUE,
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
from sluice.pipeline_config import RouteConfig  # noqa: E402
from sluice.workflow_io import RUN_ROUTE, workflow_id_for  # noqa: E402
from sluice.workflows.scheduler import AUTO_MAX_BATCH  # noqa: E402

SLUICE_QUEUE = "sluice-bench"
STAGE = "raw"
HTTP_TIMEOUT = 900.0  # the replay call returns after publishing every object
# The default route leaves batch_size unset (adaptive): its raw batched twin runs the largest
# adaptive batch, the fewest activities Sluice can get to.
DEFAULT_BATCH = AUTO_MAX_BATCH
DEFAULT_CONCURRENCY = RouteConfig.model_fields["concurrency"].default
SYSTEMS = ("sluice", "raw", "raw_batched")
LABELS = {
    "sluice": "Sluice replay -> noop",
    "raw": "raw, 1 activity/object",
    "raw_batched": "raw batched, B keys/activity",
}
CPU_PARTS = ("temporal", "worker", "bench")
WORKER = {"sluice": "sluice-worker", "raw": "raw-worker", "raw_batched": "raw-worker"}


def systems_of(args: argparse.Namespace) -> tuple[str, ...]:
    """`--no-per-object` drops the slowest phase (one raw activity per object, not in the goal)."""
    return SYSTEMS if args.per_object else tuple(s for s in SYSTEMS if s != "raw")


def ratio_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def pipeline_yaml(objects: int, tuned_batch: int, tuned_concurrency: int) -> str:
    return f"""\
name: bench-replay
namespace: bench
layer: bench
description: N stored objects to replay into no-op routes (bench/bench_replay.py)
init_message:
  route: load
  payload: {{count: {objects}}}
routes:
  - name: load
    handler: bench.handlers:fanout
    stage: {STAGE}
    timeout: 60m
  - name: sink
    handler: noop
  - name: sink_tuned
    handler: noop
    batch_size: {tuned_batch}
    concurrency: {tuned_concurrency}
"""


@dataclass
class Setting:
    name: str  # "default" or "tuned"
    route: str  # the Sluice route replayed into
    batch: int
    concurrency: int

    @property
    def label(self) -> str:
        return f"{self.name} (B={self.batch}, C={self.concurrency})"


@dataclass
class Phase:
    """One timed replay (Sluice) or one raw workflow chain, with its checks and /proc figures."""

    system: str
    setting: str
    objects: int
    trigger: float  # wall clock before the trigger call
    returned: float  # trigger call returned (Sluice: every object published)
    done: float  # workflow result received (follows continue-as-new)
    activities: int = 0  # activities of the route (Sluice) / the workflow (raw)
    runs: int = 0  # workflow runs (continue-as-new chain)
    max_events_per_run: int = 0
    cpu_s: dict[str, float] = field(default_factory=dict)
    cpu_publish_s: dict[str, float] = field(default_factory=dict)  # Sluice: part of cpu_s spent publishing
    peak_rss_kib: dict[str, float] = field(default_factory=dict)
    key: str = ""  # execution id (Sluice) or workflow id (raw)

    @property
    def total_s(self) -> float:
        return self.done - self.trigger

    @property
    def publish_s(self) -> float:
        return self.returned - self.trigger

    @property
    def processing_s(self) -> float:
        return self.done - self.returned


def arrangement(temporal_db: str) -> str:
    persistence = (
        "SQLite file in a temp dir, as `sluice dev`" if temporal_db == "file" else "in-memory SQLite"
    )
    return (
        f"Temporal dev server subprocess (`temporal server start-dev`, {persistence}); Sluice worker "
        "subprocess (`python -m sluice.runtime.cli worker`) and Sluice API (uvicorn, in the benchmark process; "
        "SQLite DB and local-file storage in the temp dir) started like `sluice dev`; replays triggered "
        "with POST /api/v1/replay over HTTP (httpx). Raw baseline: its own worker subprocess "
        "(`python -m bench.raw_worker`, same max_concurrent_activities, pydantic converter) on the same "
        "server, one workflow chain (continue-as-new like Sluice's) started with client.start_workflow. "
        "Completion for both: Temporal workflow result (handle.result(), following continue-as-new)."
    )


# -- /proc figures over a phase ------------------------------------------------------------------
class Probe:
    """CPU used and peak RSS reached by the stack's processes between start() and stop()."""

    def __init__(self, pids: dict[str, int], system: str):
        self.parts = {"temporal": pids["temporal"], "worker": pids[WORKER[system]], "bench": pids["bench"]}
        self.memory = {name: pids[name] for name in ("temporal", WORKER[system], "bench")}
        self.reset_ok = True
        self.before: dict[str, float] = {}
        self.published: dict[str, float] = {}

    def start(self) -> None:
        for pid in self.memory.values():
            self.reset_ok &= reset_peak_rss(pid)
        self.before = {part: process_cpu(pid) for part, pid in self.parts.items()}

    def mark_published(self) -> None:
        """Sluice: the replay call returned; CPU up to here is the publish phase's."""
        self.published = {part: process_cpu(pid) for part, pid in self.parts.items()}

    def stop(self, phase: Phase) -> None:
        phase.cpu_s = {part: process_cpu(pid) - self.before[part] for part, pid in self.parts.items()}
        if self.published:
            phase.cpu_publish_s = {part: self.published[part] - self.before[part] for part in self.parts}
        phase.peak_rss_kib = {name: memory_kib(pid) for name, pid in self.memory.items()}


# -- history ---------------------------------------------------------------------------------------
async def history_figures(stack: Stack, workflow_id: str, activity_type: str) -> tuple[int, int, int]:
    """(runs, activities of `activity_type` scheduled, most events in one run) over a workflow chain."""
    runs = [wf async for wf in stack.client.list_workflows(f"WorkflowId = '{workflow_id}'")]
    activities = most_events = 0
    for wf in runs:
        history = await stack.client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        most_events = max(most_events, len(history.events))
        for event in history.events:
            if (
                event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
                and event.activity_task_scheduled_event_attributes.activity_type.name == activity_type
            ):
                activities += 1
    return len(runs), activities, most_events


# -- the systems ---------------------------------------------------------------------------------
async def sluice_replay(
    stack: Stack,
    parent_id: str,
    route: str,
    expected: int,
    from_path: str | None = None,
    on_published: Callable[[], None] | None = None,
) -> tuple[str, float, float, float]:
    """POST /api/v1/replay, then wait for the execution's workflow; (execution id, t0, t1, t2)."""
    body: dict[str, Any] = {"from_execution_id": parent_id, "from_stage": STAGE, "to_route": route}
    if from_path:
        body["from_path"] = from_path
    t0 = time.time()
    resp = await stack.http.post("/api/v1/replay", json=body)
    t1 = time.time()
    if on_published is not None:
        on_published()
    if resp.status_code != 200:
        raise RuntimeError(f"POST /api/v1/replay: {resp.status_code} {resp.text[:1000]}")
    out = resp.json()
    counts = (out["objects_found"], out["objects_published"], out["objects_failed"])
    if counts != (expected, expected, 0) or out["status"] != "publishing_complete":
        raise RuntimeError(
            f"replay published {counts} (found, published, failed), expected {expected}: {out}"
        )
    execution_id = out["execution_id"]
    await stack.client.get_workflow_handle(workflow_id_for(execution_id)).result()
    t2 = time.time()
    return execution_id, t0, t1, t2


async def verify_sluice(stack: Stack, execution_id: str, route: str, expected: int) -> None:
    """Not timed: the execution reads `completed`, and its target route handled every object once."""
    resp = await stack.http.get(f"/api/v1/executions/{execution_id}")
    status = resp.json().get("status") if resp.status_code == 200 else resp.status_code
    if status != "completed":
        raise RuntimeError(f"replay execution {execution_id} is {status!r} after its workflow completed")
    resp = await stack.http.get(f"/api/v1/executions/{execution_id}/routes")
    routes = {r["route"]: r for r in resp.json()["routes"]}
    got = routes.get(route) or {}
    if (got.get("messages_in"), got.get("messages_processed"), got.get("status")) != (
        expected,
        expected,
        "completed",
    ):
        raise RuntimeError(f"replay {execution_id}: route {route} reads {got}, expected {expected} processed")


async def raw_run(stack: Stack, job: RawReplayJob) -> tuple[str, RawReplayResult, float, float, float]:
    workflow_id = f"bench-raw-replay-{uuid.uuid4().hex}"
    t0 = time.time()
    handle: WorkflowHandle[Any, RawReplayResult] = await stack.client.start_workflow(
        RAW_REPLAY_WORKFLOW, job, id=workflow_id, task_queue=RAW_QUEUE, result_type=RawReplayResult
    )
    t1 = time.time()
    result = await handle.result()
    t2 = time.time()
    if result.processed != job.total:
        raise RuntimeError(f"raw workflow {workflow_id} processed {result.processed} of {job.total}")
    return workflow_id, result, t0, t1, t2


def raw_job(prefix: str, objects: int, setting: Setting, per_object: bool, per_run: int) -> RawReplayJob:
    return RawReplayJob(
        prefix=prefix,
        total=objects,
        concurrency=setting.concurrency,
        batch=setting.batch,
        per_object=per_object,
        activities_per_run=per_run,
    )


async def run_phase(
    stack: Stack, system: str, setting: Setting, parent_id: str, objects: int, timeout: float
) -> Phase:
    probe = Probe(stack.pids, system)
    probe.start()
    try:
        if system == "sluice":
            key, t0, t1, t2 = await asyncio.wait_for(
                sluice_replay(stack, parent_id, setting.route, objects, on_published=probe.mark_published),
                timeout,
            )
            phase = Phase(system, setting.name, objects, t0, t1, t2, key=key)
        else:
            job = raw_job(
                f"{parent_id}/{STAGE}/item-",
                objects,
                setting,
                system == "raw",
                stack.settings.activities_per_run,
            )
            key, _result, t0, t1, t2 = await asyncio.wait_for(raw_run(stack, job), timeout)
            phase = Phase(system, setting.name, objects, t0, t1, t2, key=key)
    except TimeoutError:
        raise RuntimeError(f"{system} {setting.label}: did not finish within {timeout:.0f}s") from None
    probe.stop(phase)
    # Not timed from here on.
    if system == "sluice":
        await verify_sluice(stack, key, setting.route, objects)
        phase.runs, phase.activities, phase.max_events_per_run = await history_figures(
            stack, workflow_id_for(key), RUN_ROUTE
        )
    else:
        activity = "bench.raw_object" if system == "raw" else "bench.raw_batch"
        phase.runs, phase.activities, phase.max_events_per_run = await history_figures(stack, key, activity)
        expected = objects if system == "raw" else math.ceil(objects / setting.batch)
        if phase.activities != expected:
            raise RuntimeError(f"raw workflow {key} ran {phase.activities} activities, expected {expected}")
    if not probe.reset_ok:
        phase.peak_rss_kib["reset"] = 0.0  # VmHWM could not be reset: peaks are since process start
    return phase


# -- the run ---------------------------------------------------------------------------------------
async def setup_parent(stack: Stack, args: argparse.Namespace) -> tuple[str, float]:
    """Not timed as part of any figure: store N objects in stage `raw`; (parent execution id, seconds)."""
    yaml_text = pipeline_yaml(args.objects, args.tuned_batch, args.tuned_concurrency)
    resp = await stack.http.post(
        "/api/v1/configs", content=yaml_text, headers={"Content-Type": "application/yaml"}
    )
    if resp.status_code != 201:
        raise RuntimeError(f"POST /api/v1/configs: {resp.status_code} {resp.text[:1000]}")
    t0 = time.time()
    resp = await stack.http.post(f"/api/v1/configs/{resp.json()['id']}/run")
    if resp.status_code != 200:
        raise RuntimeError(f"POST run: {resp.status_code} {resp.text[:1000]}")
    body = resp.json()
    await asyncio.wait_for(stack.client.get_workflow_handle(body["workflow_id"]).result(), args.timeout)
    seconds = time.time() - t0
    parent = (await stack.http.get(f"/api/v1/executions/{body['id']}")).json()
    if parent.get("status") != "completed" or parent.get("objects_written") != args.objects:
        raise RuntimeError(f"setup: parent execution reads {parent}, expected {args.objects} objects")
    return body["id"], seconds


async def measure(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    log(f"setup (not timed): storing {args.objects} objects in stage {STAGE!r} with a fan-out ...")
    parent_id, setup_s = await setup_parent(stack, args)
    log(f"  done in {setup_s:.1f}s")
    after_setup = {
        name: memory_kib(pid) for name, pid in stack.pids.items() if name != "raw-worker"
    }  # peaks so far, the fan-out included
    settings = [
        Setting("default", "sink", DEFAULT_BATCH, DEFAULT_CONCURRENCY),
        Setting("tuned", "sink_tuned", args.tuned_batch, args.tuned_concurrency),
    ]
    if args.warmup:
        log("warm-up (discarded): a 10-object replay and short raw workflows ...")
        for setting in settings:
            key, *_ = await sluice_replay(
                stack, parent_id, setting.route, min(10, args.objects), "item-00000"
            )
            await verify_sluice(stack, key, setting.route, min(10, args.objects))
            for per_object in (True, False) if args.per_object else (False,):
                await raw_run(stack, raw_job(f"{parent_id}/{STAGE}/item-", 20, setting, per_object, 2000))
    phases: list[Phase] = []
    systems = systems_of(args)
    for rnd in range(args.rounds):
        for setting in settings:
            order = systems if rnd % 2 == 0 else systems[::-1]
            for system in order:
                log(
                    f"round {rnd + 1}/{args.rounds}, {setting.label}: {LABELS[system]}, {args.objects} objects ..."
                )
                phase = await run_phase(stack, system, setting, parent_id, args.objects, args.timeout)
                phases.append(phase)
                extra = f" (all published at {phase.publish_s:.1f}s)" if system == "sluice" else ""
                log(
                    f"  {phase.objects / phase.total_s:.1f} objects/s, {phase.total_s:.1f}s{extra}, "
                    f"{phase.activities} activities, {phase.runs} run(s)"
                )
    return {
        "parent_execution_id": parent_id,
        "setup_s": setup_s,
        "peak_rss_kib_after_setup": after_setup,
        "settings": {
            s.name: {"route": s.route, "batch": s.batch, "concurrency": s.concurrency} for s in settings
        },
        "results": summarize(phases, settings, systems),
        "phases": [phase_dict(p) for p in phases],
    }


def phase_dict(p: Phase) -> dict[str, Any]:
    return {
        "system": p.system,
        "setting": p.setting,
        "key": p.key,
        "objects": p.objects,
        "total_s": p.total_s,
        "publish_s": p.publish_s if p.system == "sluice" else None,
        "processing_s": p.processing_s,
        "activities": p.activities,
        "runs": p.runs,
        "max_events_per_run": p.max_events_per_run,
        "cpu_s": p.cpu_s,
        "cpu_publish_s": p.cpu_publish_s or None,
        "peak_rss_kib": p.peak_rss_kib,
    }


def summarize(phases: list[Phase], settings: list[Setting], systems: tuple[str, ...]) -> dict[str, Any]:
    """Per setting and system, pooled over rounds; ratios within the same setting of this run."""
    out: dict[str, Any] = {}
    for setting in settings:

        def of(system: str, setting: Setting = setting) -> list[Phase]:
            return [p for p in phases if p.setting == setting.name and p.system == system]

        rows: dict[str, Any] = {}
        for system in systems:
            mine = of(system)
            objects = sum(p.objects for p in mine)
            total = sum(p.total_s for p in mine)
            processing = sum(p.processing_s for p in mine)
            cpu = {part: sum(p.cpu_s[part] for p in mine) * 1e6 / objects for part in CPU_PARTS}
            publish_cpu = (
                {part: sum(p.cpu_publish_s[part] for p in mine) * 1e6 / objects for part in CPU_PARTS}
                if system == "sluice"
                else None
            )
            rows[system] = {
                "objects": objects,
                "seconds": total,
                "objects_per_s": objects / total,
                "publish_s": sum(p.publish_s for p in mine) if system == "sluice" else None,
                "processing_s": processing,
                "processing_objects_per_s": objects / processing,
                "activities_per_s": sum(p.activities for p in mine) / total,
                "activities": sum(p.activities for p in mine) // len(mine),
                "runs": max(p.runs for p in mine),
                "max_events_per_run": max(p.max_events_per_run for p in mine),
                "cpu_ms_per_1000_objects": {**cpu, "total": sum(cpu.values())},
                "publish_cpu_ms_per_1000_objects": (
                    {**publish_cpu, "total": sum(publish_cpu.values())} if publish_cpu else None
                ),
                "peak_rss_mib": {
                    name: max(p.peak_rss_kib.get(name, float("nan")) for p in mine) / 1024
                    for name in mine[0].peak_rss_kib
                    if name != "reset"
                },
                "peak_rss_since_process_start": any("reset" in p.peak_rss_kib for p in mine),
            }
        slu, raw = rows["sluice"], rows.get("raw")
        rows["ratios"] = {
            "sluice_vs_raw": slu["objects_per_s"] / raw["objects_per_s"] if raw else None,
            "sluice_vs_raw_batched": slu["objects_per_s"] / rows["raw_batched"]["objects_per_s"],
            "sluice_processing_vs_raw": slu["processing_objects_per_s"] / raw["objects_per_s"]
            if raw
            else None,
            "sluice_processing_vs_raw_batched": slu["processing_objects_per_s"]
            / rows["raw_batched"]["objects_per_s"],
            # Round by round (the n-th Sluice phase against the n-th raw batched one): how far the
            # machine's noise alone moves the ratio within one run.
            "sluice_vs_raw_batched_per_round": [
                b.total_s / p.total_s for p, b in zip(of("sluice"), of("raw_batched"), strict=True)
            ],
            "cpu_sluice_vs_raw_batched": slu["cpu_ms_per_1000_objects"]["total"]
            / rows["raw_batched"]["cpu_ms_per_1000_objects"]["total"],
        }
        out[setting.name] = rows
    return out


def render(report: dict[str, Any]) -> str:
    meta, params, fig = report["meta"], report["params"], report["figures"]
    n = params["objects"]
    lines = [
        f"Sluice replay vs raw Temporal — {n:,} objects, {meta['timestamp']}, python {meta['python']}, "
        f"temporal CLI {meta['temporal_cli']}, temporalio {meta['temporalio']}, sluice {meta['sluice']}, "
        f"{meta['cpus']} CPU(s)",
        f"arrangement: {meta['arrangement']}",
        f"setup (not timed): fan-out of {n:,} objects into stage `{STAGE}` took {fig['setup_s']:.1f}s; "
        f"{params['rounds']} round(s), system order flipped each round; "
        f"raw workflows continue as new every {params['activities_per_run']} activities or when Temporal "
        "suggests it, as Sluice's",
        "",
        f"{'setting / system':<36}{'objects/s':>10}{'total s':>9}{'published':>10}{'after s':>10}"
        f"{'obj/s after':>12}{'activities':>11}{'runs':>5}{'max ev/run':>11}{'CPU ms/1k obj':>14}",
    ]
    for name, setting in fig["settings"].items():
        rows = fig["results"][name]
        size = f"unset: adaptive, up to {setting['batch']}" if name == "default" else setting["batch"]
        lines.append(f"{name} (batch_size {size}, concurrency {setting['concurrency']})")
        for system in (system for system in SYSTEMS if system in rows):
            r = rows[system]
            label = LABELS[system].replace("B keys", f"{setting['batch']} keys")
            publish = f"{r['publish_s']:.1f}" if r["publish_s"] is not None else "-"
            lines.append(
                f"  {label:<34}{r['objects_per_s']:>10.1f}{r['seconds']:>9.1f}{publish:>10}"
                f"{r['processing_s']:>10.1f}{r['processing_objects_per_s']:>12.1f}{r['activities']:>11}"
                f"{r['runs']:>5}{r['max_events_per_run']:>11}{r['cpu_ms_per_1000_objects']['total']:>14.0f}"
            )
        slu = rows["sluice"]
        if slu["activities"] > math.ceil(n / setting["batch"]):
            lines.append(
                f"  note: Sluice ran {slu['activities']} route activities, not ceil({n}/{setting['batch']}) = "
                f"{math.ceil(n / setting['batch'])}: {n / slu['activities']:.0f} objects per batch at most "
                "(a batch never spans two pages; an adaptive route starts at 10 a batch)"
            )
        q, fmt = rows["ratios"], ratio_text
        lines.append(
            f"  ratio Sluice/raw objects/s: {fmt(q['sluice_vs_raw'])} vs 1 activity/object, "
            f"{fmt(q['sluice_vs_raw_batched'])} vs batched; after publishing only: "
            f"{fmt(q['sluice_processing_vs_raw'])} / {fmt(q['sluice_processing_vs_raw_batched'])}; "
            f"CPU per object Sluice/raw batched: {fmt(q['cpu_sluice_vs_raw_batched'])}"
        )
        per_round = [r for r in q["sluice_vs_raw_batched_per_round"] if r is not None]
        lines.append(
            "  Sluice/raw batched per round: "
            + ", ".join(fmt(r) for r in q["sluice_vs_raw_batched_per_round"])
            + (f" (median {statistics.median(per_round):.2f})" if per_round else "")
        )
        cpu = rows["sluice"]["cpu_ms_per_1000_objects"]
        pub = rows["sluice"]["publish_cpu_ms_per_1000_objects"]
        raw_cpu = rows["raw_batched"]["cpu_ms_per_1000_objects"]
        lines.append(
            "  CPU ms/1k objects (Temporal / worker / bench+API): "
            f"Sluice {cpu['temporal']:.0f} / {cpu['worker']:.0f} / {cpu['bench']:.0f} "
            f"(until published {pub['temporal']:.0f} / {pub['worker']:.0f} / {pub['bench']:.0f}), "
            f"raw batched {raw_cpu['temporal']:.0f} / {raw_cpu['worker']:.0f} / {raw_cpu['bench']:.0f}"
        )
        lines.append("")
    lines.append("peak RSS (MiB, VmHWM, reset at the start of each phase):")
    for name in fig["settings"]:
        rows = fig["results"][name]
        slu = rows["sluice"]["peak_rss_mib"]
        raw = rows.get("raw", rows["raw_batched"])["peak_rss_mib"]
        since = (
            " (since process start: reset refused)" if rows["sluice"]["peak_rss_since_process_start"] else ""
        )
        lines.append(
            f"  {name:<8} Sluice worker {slu['sluice-worker']:.0f}, API+bench process {slu['bench']:.0f}, "
            f"Temporal {slu['temporal']:.0f}; raw worker {raw['raw-worker']:.0f}{since}"
        )
    setup = fig["peak_rss_kib_after_setup"]
    lines.append(
        f"  after setup (fan-out included): Sluice worker {setup['sluice-worker'] / 1024:.0f}, "
        f"API+bench process {setup['bench'] / 1024:.0f}, Temporal {setup['temporal'] / 1024:.0f}"
    )
    lines.append(
        f"checked after each timed phase: Sluice execution `completed`, target route messages_in == "
        f"messages_processed == {n:,}, replay response found == published == {n:,}, failed 0; raw: "
        "processed == N, activities == N (or ceil(N/B))"
    )
    return "\n".join(lines)


def git_state() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head or 'unknown'}{' (uncommitted changes)' if dirty else ''}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "-n", "--objects", type=int, default=10_000, help="objects to replay (default %(default)s)"
    )
    parser.add_argument(
        "--tuned-batch",
        type=int,
        default=100,
        help="batch_size of the tuned setting, 1-1000 (default %(default)s)",
    )
    parser.add_argument(
        "--tuned-concurrency",
        type=int,
        default=16,
        help="concurrency of the tuned setting, 1-500 (default %(default)s)",
    )
    parser.add_argument(
        "-r",
        "--rounds",
        type=int,
        default=1,
        help="rounds; each flips the order of the systems (default %(default)s)",
    )
    parser.add_argument(
        "-w",
        "--warmup",
        type=int,
        choices=(0, 1),
        default=1,
        help="1: a short discarded replay and raw run per setting first (default %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=1800.0,
        help="seconds allowed for the setup and for each timed phase (default %(default)s)",
    )
    parser.add_argument(
        "--temporal-db",
        choices=("file", "memory"),
        default="file",
        help="Temporal dev server persistence: SQLite file like `sluice dev`, or in memory (default %(default)s)",
    )
    parser.add_argument(
        "--no-per-object",
        dest="per_object",
        action="store_false",
        help="skip raw Temporal with one activity per object (the slowest phase, not in the goal): "
        "more rounds of the other two in the same time",
    )
    parser.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    args = parser.parse_args(argv)
    if args.objects < 1 or args.rounds < 1:
        parser.error("--objects and --rounds must be at least 1")
    if not 1 <= args.tuned_batch <= 1000:
        parser.error("--tuned-batch must be 1-1000 (RouteConfig.batch_size)")
    if not 1 <= args.tuned_concurrency <= 500:
        parser.error("--tuned-concurrency must be 1-500 (RouteConfig.concurrency)")
    return args


async def benchmark(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    settings = bench_settings(tmp, SLUICE_QUEUE)
    log(f"starting the stack in {tmp} (Temporal persistence: {args.temporal_db}) ...")
    async with bench_stack(settings, tmp, args.temporal_db, http_timeout=HTTP_TIMEOUT) as stack:
        try:
            figures = await until_stack_fails(stack, measure(stack, args))
        except Exception:
            stack.dump_logs()
            raise
        figures["worker_max_concurrent_activities"] = stack.settings.worker_max_concurrent_activities
        figures["activities_per_run"] = stack.settings.activities_per_run
        return figures


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    cancel_on_sigterm()
    started = datetime.now(UTC)
    with isolated_run() as tmp:
        figures = await benchmark(args, tmp)
    return {
        "benchmark": "replay",
        "meta": {
            "timestamp": started.strftime("%Y-%m-%d %H:%M:%S UTC"),
            "python": platform.python_version(),
            "temporal_cli": temporal_version(),
            "temporalio": temporalio.__version__,
            "sluice": sluice.__version__,
            "git": git_state(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "arrangement": arrangement(args.temporal_db),
            "sluice_trigger": "POST /api/v1/replay (returns once every object is published)",
            "sluice_completion": "Temporal handle.result() on sluice-exec-{execution_id}",
            "raw_completion": "Temporal handle.result() (follows continue-as-new)",
        },
        "params": {
            "objects": args.objects,
            "tuned_batch": args.tuned_batch,
            "tuned_concurrency": args.tuned_concurrency,
            "rounds": args.rounds,
            "per_object": args.per_object,
            "warmup": args.warmup,
            "temporal_db": args.temporal_db,
            "activities_per_run": figures["activities_per_run"],
            "worker_max_concurrent_activities": figures["worker_max_concurrent_activities"],
        },
        "figures": figures,
    }


def main(argv: list[str] | None = None) -> int:
    return run_main(main_async, render, parse_args(argv), "replay")


if __name__ == "__main__":
    sys.exit(main())
