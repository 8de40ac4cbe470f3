"""Record the workflow histories that `tests/test_workflow_replay.py` replays.

Not collected by the suite (the name does not match `test_*.py`). Re-record only when a history
should change on purpose, e.g. a new representative scenario, never to make a failing replay pass:
a replay failure means running workflows would break.

    SLUICE_RECORD_HISTORIES=1 .venv/bin/pytest -q tests/histories/record_histories.py

Each scenario runs on the real stack (Temporal dev server, in-process worker, API over HTTP) and
writes `tests/histories/<name>.json` (every run of a continued-as-new chain as `<name>.runN.json`).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from temporalio.client import WorkflowExecutionStatus

from sluice.services import replays
from sluice.workflow_io import ReplaySpec
from tests.conftest import Stack, workflow_closed, workflow_runs

HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.skipif(
    not os.environ.get("SLUICE_RECORD_HISTORIES"), reason="set SLUICE_RECORD_HISTORIES=1 to re-record"
)

LINEAR_COLLECT = """
name: linear
init_message: {route: load, payload: {count: 3}}
routes:
  - {name: load, handler: tests.handlers:fanout, stage: raw, next: [upper, copy]}
  - {name: upper, handler: tests.handlers:sync_upper, stage: upper, next: [index]}
  - {name: copy, handler: tests.handlers:copy, stage: copied, batch_size: 2, next: [index]}
  - {name: index, handler: noop, collect: true}
"""

SPILL = """
name: spill
init_message: {route: load, payload: {count: 400}}
routes:
  - {name: load, handler: tests.handlers:fanout, stage: raw, next: [copy]}
  - {name: copy, handler: tests.handlers:copy, stage: copied, batch_size: 25, concurrency: 3}
"""

RETRY_THEN_FAIL = """
name: retries
init_message: {route: flaky, payload: {}}
routes:
  - name: flaky
    handler: tests.handlers:flaky
    stage: out
    next: [fail]
    params: {succeed_on: 2}
    retry: {max_attempts: 3, backoff: 100ms}
  - name: fail
    handler: tests.handlers:always_fail
    retry: {max_attempts: 2, backoff: 100ms}
"""

SLOW = """
name: slow
init_message: {route: wait, payload: {}}
routes:
  - {name: wait, handler: tests.handlers:slow, stage: out, heartbeat_timeout: 1s}
"""


async def _save(stack: Stack, name: str, execution_id: str) -> None:
    workflow_id = f"sluice-exec-{execution_id}"
    run_ids = await workflow_runs(stack.temporal, workflow_id)
    for i, run_id in enumerate(run_ids):
        history = await stack.temporal.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        suffix = f".run{i + 1}" if len(run_ids) > 1 else ""
        (HERE / f"{name}{suffix}.json").write_text(json.dumps(json.loads(history.to_json()), indent=1))


async def _finished(stack: Stack, execution_id: str) -> dict:
    """The record is final, and so is the workflow (it closes just after recording)."""
    body = await stack.wait(execution_id, timeout=120)
    await workflow_closed(stack.temporal, f"sluice-exec-{execution_id}")
    return body


async def _detached_replay(stack: Stack, run_id: str) -> str:
    """Replay a run's `raw` objects into `copy`; the new execution's id once it completed."""
    replay = await stack.http.post(
        "/api/v1/replay",
        json={"from_execution_id": run_id, "from_stage": "raw", "to_route": "copy"},
    )
    assert replay.status_code == 200, replay.text
    replay_id = replay.json()["execution_id"]
    assert (await _finished(stack, replay_id))["status"] == "completed"
    return replay_id


async def test_record(make_stack) -> None:
    stack: Stack = await make_stack(activities_per_run=12)

    linear = await stack.create_config(LINEAR_COLLECT)
    run = (await stack.run(linear["id"])).json()
    assert (await _finished(stack, run["id"]))["status"] == "completed"
    await _save(stack, "linear_collect", run["id"])

    spill = await stack.create_config(SPILL)
    spill_run = (await stack.run(spill["id"])).json()
    assert (await _finished(stack, spill_run["id"]))["status"] == "completed"
    await _save(stack, "spill_continue_as_new", spill_run["id"])

    await _save(stack, "detached_replay", await _detached_replay(stack, run["id"]))

    retries = await stack.create_config(RETRY_THEN_FAIL)
    failed = (await stack.run(retries["id"])).json()
    assert (await _finished(stack, failed["id"]))["status"] == "failed"
    await _save(stack, "retry_then_fail", failed["id"])

    slow = await stack.create_config(SLOW)
    slow_run = (await stack.run(slow["id"])).json()
    await asyncio.sleep(1.5)
    cancel = await stack.http.post(f"/api/v1/executions/{slow_run['id']}/cancel")
    assert cancel.status_code == 200, cancel.text
    assert cancel.json()["status"] == "cancelled"
    await _save(stack, "cancelled", slow_run["id"])


FOUR = """
name: four
init_message: {route: load, payload: {count: 6}}
params: {fail: [item-00002.txt], broken: BROKEN}
routes:
  - {name: load, handler: tests.handlers:fanout, stage: raw, next: [check]}
  - {name: check, handler: tests.handlers:picky, stage: checked, batch_size: 3, next: [final], retry: {max_attempts: 1}}
  - {name: final, handler: tests.handlers:copy, stage: final}
"""

SLOW_COPY = """
name: slowcopy
init_message: {route: load, payload: {count: 3}}
params: {sleep: 1.0}
routes:
  - {name: load, handler: tests.handlers:fanout, stage: raw, next: [copy]}
  - {name: copy, handler: tests.handlers:slow_copy, stage: copied, batch_size: 1, concurrency: 1}
"""

DATED = """
name: dated
init_message: {route: only, payload: {day: "${param.date}"}}
params: {date: today}
schedule: {every: 2s, overlap: skip}
routes:
  - {name: only, handler: tests.handlers:dated_sleep, stage: out}
"""


async def _save_workflow(stack: Stack, name: str, workflow_id: str) -> None:
    history = await stack.temporal.get_workflow_handle(workflow_id).fetch_history()
    (HERE / f"{name}.json").write_text(json.dumps(json.loads(history.to_json()), indent=1))


async def test_record_seed_002(make_stack, tmp_path: Path) -> None:
    """The scenarios behind seed 002: a failed batch split and the rest going on, a graceful
    cancel, a resume, a backfill and a scheduled run."""
    stack: Stack = await make_stack()
    broken = tmp_path / "broken"
    broken.write_text("yes")
    four = await stack.create_config(FOUR.replace("BROKEN", str(broken)))
    failed = (await stack.run(four["id"])).json()
    assert (await _finished(stack, failed["id"]))["status"] == "failed"
    await _save(stack, "isolate_then_fail", failed["id"])
    broken.unlink()
    resumed = (await stack.http.post(f"/api/v1/executions/{failed['id']}/resume")).json()
    assert (await _finished(stack, resumed["id"]))["status"] == "completed"
    await _save(stack, "resumed", resumed["id"])

    slow = await stack.create_config(SLOW_COPY)
    slow_run = (await stack.run(slow["id"])).json()
    await asyncio.sleep(1.5)
    cancel = await stack.http.post(f"/api/v1/executions/{slow_run['id']}/cancel", params={"mode": "graceful"})
    assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled", cancel.text
    await workflow_closed(stack.temporal, f"sluice-exec-{slow_run['id']}")
    await _save(stack, "graceful_cancel", slow_run["id"])

    dated = await stack.create_config(DATED)
    resp = await stack.http.post(
        f"/api/pipelines/{dated['id']}/backfill", json={"start_date": "2024-01-01", "end_date": "2024-01-02"}
    )
    assert resp.status_code == 202, resp.text
    backfill_id = resp.headers["Sluice-Backfill-Id"]
    await workflow_closed(stack.temporal, f"sluice-backfill-{backfill_id}", timeout=60)
    await _save_workflow(stack, "backfill", f"sluice-backfill-{backfill_id}")

    for _ in range(100):
        runs = (
            await stack.http.get("/api/v1/executions", params={"config_id": dated["id"], "limit": 50})
        ).json()
        scheduled = [
            e for e in runs["items"] if e["trigger"].startswith("schedule:") and e["status"] == "completed"
        ]
        if scheduled:
            break
        await asyncio.sleep(0.2)
    schedule = await stack.temporal.get_schedule_handle(f"sluice-schedule-{dated['id']}").describe()
    await stack.http.delete(f"/api/v1/configs/{dated['id']}")
    for action in schedule.info.recent_actions:
        workflow_id = action.action.workflow_id  # type: ignore[attr-defined]
        if await workflow_closed(stack.temporal, workflow_id) == WorkflowExecutionStatus.COMPLETED:
            await _save_workflow(stack, "scheduled_run", workflow_id)
            break
    else:
        raise AssertionError("no completed scheduled run to record")


ADAPTIVE = """
name: adaptive
init_message: {route: load, payload: {count: 250}}
routes:
  - {name: load, handler: tests.handlers:fanout, stage: raw, next: [copy]}
  - {name: copy, handler: tests.handlers:copy, stage: copied}
"""


async def test_record_throughput(make_stack) -> None:
    """A fan-out streamed into spill pages, copied by a route that sizes its batches from its
    handler's pace, and the final record written by a local activity."""
    stack: Stack = await make_stack()
    adaptive = await stack.create_config(ADAPTIVE)
    run = (await stack.run(adaptive["id"])).json()
    assert (await _finished(stack, run["id"]))["status"] == "completed"
    await _save(stack, "adaptive_local_finalize", run["id"])


async def test_record_chunked_replay(make_stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """A detached replay published in chunks of 3 keys while its route already runs batches (as
    replays were started before their batches derived their messages)."""
    monkeypatch.setattr(
        replays,
        "ReplaySpec",
        lambda **kw: ReplaySpec(**{**kw, "derived": False, "streamed": False, "chunk_keys": 3}),
    )
    stack: Stack = await make_stack()
    linear = await stack.create_config(LINEAR_COLLECT.replace("count: 3", "count: 8"))
    run = (await stack.run(linear["id"])).json()
    assert (await _finished(stack, run["id"]))["status"] == "completed"
    await _save(stack, "chunked_replay", await _detached_replay(stack, run["id"]))


async def test_record_derived_replay(make_stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """A detached replay whose keys are published by one activity and whose route's batches
    derive the messages (as replays were started before publishing was streamed)."""
    monkeypatch.setattr(replays, "ReplaySpec", lambda **kw: ReplaySpec(**{**kw, "streamed": False}))
    stack: Stack = await make_stack()
    linear = await stack.create_config(LINEAR_COLLECT.replace("count: 3", "count: 8"))
    run = (await stack.run(linear["id"])).json()
    assert (await _finished(stack, run["id"]))["status"] == "completed"
    await _save(stack, "derived_replay", await _detached_replay(stack, run["id"]))


async def test_record_streamed_replay(make_stack) -> None:
    """A detached replay of 250 keys whose publishing activity announces its two full pages (of
    100 keys) as they land; its result queues the last 50."""
    stack: Stack = await make_stack()
    pipeline = LINEAR_COLLECT.replace("count: 3", "count: 250").replace("batch_size: 2", "batch_size: 50")
    linear = await stack.create_config(pipeline)
    run = (await stack.run(linear["id"])).json()
    assert (await _finished(stack, run["id"]))["status"] == "completed"
    await _save(stack, "streamed_replay", await _detached_replay(stack, run["id"]))
