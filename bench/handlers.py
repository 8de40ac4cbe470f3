"""What the benchmarks run: Sluice handlers and the raw-Temporal activities.

Execution benchmark: Sluice's first-route handler and the raw baseline's activities.
Replay benchmark: the fan-out that stores the objects to replay (setup), and the raw baseline's
per-object and per-batch no-op activities (the Sluice side replays into the built-in `noop`).

Both first steps record the wall-clock time at which they start, keyed by execution (Sluice) or
workflow id (raw), by appending one line to the file named in $SLUICE_BENCH_MARKS. An O_APPEND
write of one short line is atomic, so worker processes can share the file.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from temporalio import activity

MARKS_ENV = "SLUICE_BENCH_MARKS"
RAW_FIRST = "bench.raw_first"
RAW_NOOP = "bench.raw_noop"
RAW_OBJECT = "bench.raw_object"  # same names as in bench.raw_replay_workflow
RAW_BATCH = "bench.raw_batch"
FANOUT_CHUNK = 64


def record_start(key: str) -> None:
    now = time.time()
    path = os.environ.get(MARKS_ENV)
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{key} {now:.6f}\n".encode())
    finally:
        os.close(fd)


def read_marks(path: str | os.PathLike[str]) -> dict[str, float]:
    """key -> earliest recorded start (a retried first step records twice)."""
    marks: dict[str, float] = {}
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                key, _, stamp = line.strip().partition(" ")
                if key and stamp:
                    value = float(stamp)
                    marks[key] = min(marks.get(key, value), value)
    except FileNotFoundError:
        pass
    return marks


# -- Sluice ------------------------------------------------------------------------------------
async def first(message: Any, ctx: Any) -> None:
    """Route 1 (`bench.handlers:first`): record the start, then forward like the `noop` built-in."""
    record_start(ctx.execution_id)
    if ctx.next_routes:
        await ctx.send(dict(message.payload))


async def fanout(message: Any, ctx: Any) -> None:
    """Replay setup (`bench.handlers:fanout`): store `count` one-byte objects item-000000.txt, ...

    `count` comes from the payload, else the route params. Writes FANOUT_CHUNK objects at a time.
    """
    count = int(message.payload.get("count", ctx.params.get("count", 10)))
    for start in range(0, count, FANOUT_CHUNK):
        await asyncio.gather(
            *(ctx.emit(f"item-{i:06d}.txt", b"x") for i in range(start, min(start + FANOUT_CHUNK, count)))
        )
    ctx.log.info(f"emitted {count} object(s)")


async def emit_items(message: Any, ctx: Any) -> None:
    """Fan-out benchmark (`bench.handlers:emit_items`): store `count` one-byte objects one after the
    other, the way a handler usually writes its outputs (no gather of its own)."""
    count = int(message.payload.get("count", ctx.params.get("count", 10)))
    for i in range(count):
        await ctx.emit(f"item-{i:06d}.txt", b"x")


# -- raw Temporal ------------------------------------------------------------------------------
@activity.defn(name=RAW_FIRST)
async def raw_first(payload: dict[str, Any]) -> dict[str, Any]:
    record_start(str(payload["key"]))
    return dict(payload)


@activity.defn(name=RAW_NOOP)
async def raw_noop(payload: dict[str, Any]) -> dict[str, Any]:
    return dict(payload)


@activity.defn(name=RAW_OBJECT)
async def raw_object(key: str) -> int:
    """Replay baseline: one object, nothing done with it."""
    return 1


@activity.defn(name=RAW_BATCH)
async def raw_batch(keys: list[str]) -> int:
    """Replay baseline, batched: a list of objects, nothing done with them."""
    return len(keys)
