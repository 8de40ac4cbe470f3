"""Handlers used by the tests (importable by in-process and subprocess workers alike)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from os import system as smuggled  # noqa: F401 - a re-exported stdlib function is no handler
from pathlib import Path

from temporalio import activity

from sluice.errors import NonRetryableHandlerError


async def fanout(message, ctx):
    """Emit `count` small objects (payload or params)."""
    count = int(message.payload.get("count", ctx.params.get("count", 3)))
    for i in range(count):
        await ctx.emit(f"item-{i:05d}.txt", f"item {i}", payload={"i": i})
    ctx.log.info(f"emitted {count}")


async def copy(message, ctx):
    key = message.object_key
    data = await ctx.read(key)
    await ctx.emit(key.rsplit("/", 1)[-1], data.upper())


async def record_pid(message, ctx):
    """Slow enough for both workers to pick up batches; records which process ran it."""
    await asyncio.sleep(float(ctx.params.get("sleep", 0.2)))
    key = message.object_key or message.metadata.correlation_id
    await ctx.emit(key.rsplit("/", 1)[-1] + ".pid", str(os.getpid()))


async def slow(message, ctx):
    """Sleep far longer than any test; never heartbeats itself."""
    marker = ctx.params.get("marker")
    if marker:
        Path(marker).write_text("started")
    await asyncio.sleep(float(ctx.params.get("seconds", 3600)))


def sync_upper(message, ctx):
    """A plain function handler: runs in a thread with blocking ctx methods."""
    text = ctx.read_text(message.object_key)
    time.sleep(0.01)
    ctx.emit(message.object_key.rsplit("/", 1)[-1], text.upper(), content_type="text/plain")
    ctx.rows(1)


async def flaky(message, ctx):
    """Fail until attempt `succeed_on`, then write an object."""
    attempt = activity.info().attempt
    if attempt < int(ctx.params.get("succeed_on", 2)):
        raise RuntimeError(f"transient failure on attempt {attempt}")
    await ctx.emit("ok.txt", f"succeeded on attempt {attempt}")


async def always_fail(message, ctx):
    raise ValueError("this route always fails")


async def fatal(message, ctx):
    raise NonRetryableHandlerError("bad input, retrying will not help")


async def echo_payload(message, ctx):
    await ctx.emit("payload.json", message.payload)


async def crash_once(message, ctx):
    """Write the object, then die on the first attempt: the retry must not duplicate objects."""
    await ctx.emit("once.txt", "same bytes every attempt", payload={"n": 1})
    if activity.info().attempt == 1:
        raise RuntimeError("worker crashed after writing")


def not_a_handler():
    return None


async def tally(message, ctx):
    """Append the object key to a tally file (one line per invocation), to count processing."""
    path = Path(ctx.params["tally"])
    line = (message.object_key or message.metadata.correlation_id) + "\n"
    await asyncio.to_thread(_append, path, line)


def _append(path: Path, line: str) -> None:
    with path.open("a") as fh:
        fh.write(line)


async def chatty(message, ctx):
    """Log at every level, pausing between lines so a live stream sees them arrive."""
    pause = float(ctx.params.get("pause", 0.3))
    for level in ("debug", "info", "warn", "error"):
        getattr(ctx.log, level if level != "warn" else "warning")(f"{level} line from {ctx.route}")
        await asyncio.sleep(pause)
    await ctx.emit("done.txt", "done")
    ctx.rows(7)


_ACTIVE = {"now": 0, "max": 0}


async def concurrency_probe(message, ctx):
    """Record how many invocations of this handler overlap (in-process workers only)."""
    _ACTIVE["now"] += 1
    _ACTIVE["max"] = max(_ACTIVE["max"], _ACTIVE["now"])
    try:
        await asyncio.sleep(float(ctx.params.get("sleep", 0.2)))
        await ctx.emit(f"{message.payload.get('i', 0)}.txt", str(_ACTIVE["max"]))
    finally:
        _ACTIVE["now"] -= 1


def reset_probe() -> None:
    _ACTIVE.update(now=0, max=0)


async def read_key(message, ctx):
    """Read the key named in the payload (`key`), or the message's own object_key."""
    data = await ctx.read(message.payload.get("key") or message.object_key)
    await ctx.emit("copy.bin", data)


def hang_with_child(message, ctx):
    """A plain-function handler that starts a child process and then never returns."""
    import subprocess

    child = subprocess.Popen(["sleep", "600"])
    Path(ctx.params["pidfile"]).write_text(str(child.pid))
    time.sleep(3600)


async def emit_then_wait(message, ctx):
    """Write `count` objects, mark the attempt (attempt number and pid), then take `sleep` seconds."""
    for i in range(int(ctx.params.get("count", 3))):
        await ctx.emit(f"obj-{i}.txt", f"object {i}")
    marks = Path(ctx.params["marks"])
    marks.mkdir(parents=True, exist_ok=True)
    attempt = activity.info().attempt
    (marks / f"attempt-{attempt}").write_text(str(os.getpid()))
    first = ctx.params.get("first_sleep")
    await asyncio.sleep(float(first if first is not None and attempt == 1 else ctx.params.get("sleep", 1.5)))


async def chatty_bulk(message, ctx):
    """Log `lines` lines fast (shipped in many flushes while the batch runs)."""
    lines = int(ctx.params.get("lines", 100))
    for i in range(lines):
        ctx.log.info(f"line {i} of batch {message.payload.get('i')}")
        if i % 25 == 0:
            await asyncio.sleep(0.02)


async def fan_messages(message, ctx):
    """Send `count` messages onward (no objects)."""
    for i in range(int(message.payload.get("count", 3))):
        await ctx.send({"i": i})


async def slow_copy(message, ctx):
    """Copy an object after `sleep` seconds (long enough batches for chaos to land in)."""
    await asyncio.sleep(float(ctx.params.get("sleep", 0.1)))
    key = message.object_key
    await ctx.emit(key.rsplit("/", 1)[-1], await ctx.read(key))


async def picky(message, ctx):
    """Copy like `copy`, but fail on the objects named in params.fail while the file
    params.broken exists (deleting the file is "fixing the handler")."""
    key = message.object_key
    name = key.rsplit("/", 1)[-1]
    if name in ctx.params.get("fail", []) and Path(ctx.params["broken"]).exists():
        raise ValueError(f"cannot handle {name}")
    if ctx.params.get("tally"):
        await asyncio.to_thread(_append, Path(ctx.params["tally"]), f"{ctx.route} {name}\n")
    await ctx.emit(name, (await ctx.read(key)).upper())


async def counted_copy(message, ctx):
    """`copy`, recording each object it handles in params.tally."""
    key = message.object_key
    name = key.rsplit("/", 1)[-1]
    await asyncio.to_thread(_append, Path(ctx.params["tally"]), f"{ctx.route} {name}\n")
    await ctx.emit(name, await ctx.read(key))


async def show_params(message, ctx):
    """Store the message payload and the params the handler sees."""
    await ctx.emit("seen.json", {"payload": message.payload, "params": ctx.params})


async def dated_sleep(message, ctx):
    """Take params.sleep seconds, then store the payload and params it saw."""
    await asyncio.sleep(float(ctx.params.get("sleep", 0)))
    await ctx.emit("seen.json", {"payload": message.payload, "params": ctx.params})


async def write_table(message, ctx):
    """Write params.parts objects of params.rows rows each in params.format (csv, parquet, jsonl,
    json); params.variant 2 drops `score`, turns `id` into text and adds `city`. Every fourth name
    is null, and in CSV the second row's name spans two lines (a quoted newline)."""
    import csv as _csv
    import io as _io
    import json as _json

    import pyarrow as pa
    import pyarrow.parquet as pq

    fmt, rows = ctx.params.get("format", "csv"), int(ctx.params.get("rows", 10))
    variant = int(ctx.params.get("variant", 1))
    for part in range(int(ctx.params.get("parts", 1))):
        base = part * rows
        data: dict = {
            "id": [base + i if variant == 1 else f"id-{base + i}" for i in range(rows)],
            "name": [None if (base + i) % 4 == 0 else f"name {base + i}" for i in range(rows)],
        }
        if variant == 1:
            data["score"] = [float(base + i) / 2 for i in range(rows)]
        else:
            data["city"] = ["Paris" if i % 2 else "Lyon" for i in range(rows)]
        table = pa.table(data)
        if fmt == "parquet":
            buf = _io.BytesIO()
            pq.write_table(table, buf)
            await ctx.emit(
                f"part-{part:03d}.parquet", buf.getvalue(), content_type="application/vnd.apache.parquet"
            )
        elif fmt == "csv":
            out = _io.StringIO()
            writer = _csv.writer(out, lineterminator="\n")
            writer.writerow(table.column_names)
            for i, row in enumerate(table.to_pylist()):
                if i == 1:
                    row["name"] = f"{row['name']}\nsecond line"
                writer.writerow(["" if v is None else v for v in row.values()])
            await ctx.emit(f"part-{part:03d}.csv", out.getvalue(), content_type="text/csv")
        elif fmt == "jsonl":
            await ctx.emit(
                f"part-{part:03d}.jsonl", "".join(_json.dumps(r) + "\n" for r in table.to_pylist())
            )
        else:
            await ctx.emit(f"part-{part:03d}.json", table.to_pylist())


async def log_the_standard_way(message, ctx):
    """Log as Python code does: %-style args, exc_info, extra, the handler's module logger and a
    library's logger."""
    import logging as _logging

    ctx.log.info("collected %s of %d", "item", 3)
    ctx.log.warning("careful: %s", {"k": 1}, extra={"who": "test"})
    if ctx.log.isEnabledFor(_logging.DEBUG):
        ctx.log.debug("debug is on")
    try:
        raise KeyError("missing-key")
    except KeyError:
        ctx.log.exception("lookup failed for %s", "x")
    _logging.getLogger("tests.handlers.module").warning("module logger says %s", "hi")
    _logging.getLogger("somelib.client").error("library error %d", 42)
    ctx.log("old style still works", "warn")
    await ctx.emit("done.txt", "ok")


def log_from_a_thread(message, ctx):
    """A plain function (runs in a thread): its module logger is captured too."""
    import logging as _logging

    _logging.getLogger("tests.handlers.sync").warning("from the thread %s", message.payload.get("n"))


async def fail_with_traceback(message, ctx):
    def inner():
        raise ValueError("deep problem")

    inner()


async def fanout_then_fail(message, ctx):
    """Emit `count` objects, then fail while the file named by the `broken` param exists: a big
    batch whose outputs were partly stored before it failed."""
    count = int(message.payload.get("count", 3))
    for i in range(count):
        await ctx.emit(f"item-{i:05d}.txt", f"item {i}")
    if Path(ctx.params["broken"]).exists():
        raise RuntimeError("broken after emitting")


def sync_send_many(message, ctx):
    """A plain function that sends `count` messages and logs the standard way."""
    count = int(message.payload["count"])
    for i in range(count):
        ctx.send({"i": i})
    logging.getLogger(__name__).warning("sent %d messages from %s", count, ctx.route)


async def send_sized(message, ctx):
    """Send one message whose payload is about `size` bytes of JSON (non-ASCII text counts in UTF-8 bytes)."""
    size = message.payload["size"]
    await ctx.send({"text": "é" * (size // 2)})
