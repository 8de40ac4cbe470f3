"""The measuring loop shared by the peer helpers (bench/peers/<peer>_peer.py); standard library only.

Each helper runs in its peer's own virtualenv, so this file must import nothing but the standard
library. `measure` triggers one run at a time, polls its status until it is final and records
wall-clock times; compare_peers.py reads the JSON file written by `write_results`.

Before each trigger it waits a random, untimed pause of 0..--pause seconds (compare_peers.py passes
the peer's main polling period). Triggering right after the previous run completed would lock the
trigger to the same phase of a periodic poll (Prefect's runner, Dagster's run queue) on every run;
with the pause, a trigger falls anywhere in the cycle, as a user's would.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# status(run_id) -> (None, None) while the run is not final, ("success", server end time or None) or
# ("<error text>", None) once it is
Status = Callable[[str], tuple[str | None, float | None]]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--url", required=True, help="the peer's API base URL")
    parser.add_argument("--home", default="", help="the peer's home directory (where it keeps its state)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs, one at a time")
    parser.add_argument("--warmup", type=int, default=1, help="discarded runs before the timed ones")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds one run may take")
    parser.add_argument("--poll", type=float, default=0.1, help="seconds between status polls")
    parser.add_argument(
        "--pause", type=float, default=0.0, help="untimed random pause before a trigger, at most this"
    )
    parser.add_argument("--out", required=True, help="where to write the JSON results")
    parser.add_argument(
        "--tuned", action="store_true", help="the peer's tuned variant (see compare_peers.py)"
    )
    return parser.parse_args(sys.argv[2:])


def one_run(
    trigger: Callable[[], str], status: Status, timeout: float, poll: float, pause: float
) -> dict[str, Any]:
    paused = random.uniform(0.0, pause)
    time.sleep(paused)
    t0 = time.time()
    run_id = trigger()
    t1 = time.time()
    while True:
        outcome, server_end = status(run_id)
        now = time.time()
        if outcome is not None:
            break
        if now - t0 > timeout:
            raise RuntimeError(f"run {run_id} not finished after {timeout:.0f}s")
        time.sleep(poll)
    if outcome != "success":
        raise RuntimeError(f"run {run_id} ended as {outcome}")
    return {
        "run_id": run_id,
        "paused": paused,
        "trigger": t0,
        "returned": t1,
        "done": now,
        "server_end": server_end,
    }


def measure(
    args: argparse.Namespace,
    trigger: Callable[[], str],
    status: Status,
    extra: dict[str, Any],
    ready: Callable[[], str | None] | None = None,
) -> None:
    """Wait (untimed) until ready() returns None, then the warm-up runs, then the timed runs."""
    if ready is not None:
        deadline = time.time() + args.timeout
        while (waiting := ready()) is not None:
            if time.time() > deadline:
                raise RuntimeError(f"not ready after {args.timeout:.0f}s: {waiting}")
            time.sleep(0.5)
    warmup: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    for i in range(args.warmup):
        warmup.append(one_run(trigger, status, args.timeout, args.poll, args.pause))
        log(f"warm-up {i + 1}/{args.warmup}: {warmup[-1]['done'] - warmup[-1]['trigger']:.2f}s")
    for i in range(args.runs):
        runs.append(one_run(trigger, status, args.timeout, args.poll, args.pause))
        log(f"run {i + 1}/{args.runs}: {runs[-1]['done'] - runs[-1]['trigger']:.2f}s")
    write_results(
        args.out, {"warmup": warmup, "runs": runs, "poll_s": args.poll, "pause_s": args.pause, **extra}
    )


def write_results(path: str, results: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
