"""Dry runs over HTTP on a real Temporal server: real handlers in preview mode, nothing left
behind, failures reported per node, a bound on the time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import Stack, StackFactory

FANOUT = """
name: preview
init_message: {route: load, payload: {count: 30, label: "${param.label}"}}
params: {label: default}
routes:
  - {name: load, handler: "tests.handlers:fanout", stage: raw, next: [copy, bad]}
  - {name: copy, handler: "tests.handlers:copy", stage: copied, batch_size: 4}
  - {name: bad, handler: "tests.handlers:always_fail", retry: {max_attempts: 1}}
"""


def leftovers(stack: Stack) -> set[str]:
    root = stack.storage_root
    return {p.name for p in root.iterdir()} - {"_sluice"} if root.exists() else set()


async def counts(stack: Stack) -> dict[str, Any]:
    executions = (await stack.http.get("/api/v1/executions")).json()["total"]
    runs = (await stack.http.get("/api/v1/runs")).json()["total"]
    dashboard = (await stack.http.get("/api/dashboard")).json()
    calendar = (await stack.http.get("/api/runs/calendar")).json()
    return {
        "executions": executions,
        "runs": runs,
        "recent": len(dashboard["recent_runs"]),
        "calendar": calendar,
    }


async def test_dry_run_previews_each_node_and_leaves_nothing(stack: Stack) -> None:
    config = await stack.create_config(FANOUT)
    before_files, before = leftovers(stack), await counts(stack)
    resp = await stack.http.post(f"/api/pipelines/{config['id']}/dry-run", json={"params": {"label": "x"}})
    assert resp.status_code == 200, resp.text
    nodes = resp.json()
    assert set(nodes) == {"load", "copy", "bad"}
    load, copy, bad = nodes["load"], nodes["copy"], nodes["bad"]
    assert load["node_id"] == "load" and load["name"] == "load" and load["status"] == "success"
    assert load["columns"] == ["line"] and load["rows"][0] == {"line": "item 0"}
    assert len(load["rows"]) == 10  # 30 objects written, at most 10 rows shown
    assert copy["status"] == "success" and copy["messages_processed"] == 10  # at most 10 messages
    assert len(copy["rows"]) == 10 and copy["rows"][0] == {"line": "ITEM 0"}
    assert bad["status"] == "failed" and "this route always fails" in bad["error"]
    assert bad["columns"] == [] and bad["rows"] == []
    # Nothing left: no objects, no records, in no list, calendar or dashboard.
    assert leftovers(stack) == before_files
    assert await counts(stack) == before


async def test_dry_run_without_a_body_and_unknown_pipelines(stack: Stack) -> None:
    config = await stack.create_config(FANOUT.replace(", bad]", "]"))
    resp = await stack.http.post(f"/api/pipelines/{config['id']}/dry-run")
    assert resp.status_code == 200, resp.text
    assert {n["status"] for n in resp.json().values()} == {"success", "skipped"}  # `bad` gets nothing
    assert (await stack.http.post("/api/pipelines/nope/dry-run")).status_code == 404


async def test_dry_run_answers_in_bounded_time(make_stack: StackFactory, tmp_path: Path) -> None:
    stack = await make_stack(dry_run_timeout="3s")
    config = await stack.create_config(
        """
name: stuck
init_message: {route: load, payload: {count: 2}}
routes:
  - {name: load, handler: "tests.handlers:fanout", stage: raw, next: [wait]}
  - {name: wait, handler: "tests.handlers:slow", params: {seconds: 600}}
"""
    )
    before = leftovers(stack)
    resp = await stack.http.post(f"/api/pipelines/{config['id']}/dry-run")
    assert resp.status_code == 504, resp.text
    body = resp.json()
    assert body["error_code"] == "DRY_RUN_TIMEOUT" and "3s" in body["detail"]
    assert body["nodes"]["load"]["status"] == "success" and len(body["nodes"]["load"]["rows"]) == 2
    assert body["nodes"]["wait"]["status"] == "cancelled"
    assert leftovers(stack) == before
