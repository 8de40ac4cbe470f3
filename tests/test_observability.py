"""Listing executions, node runs, logs as JSON / SSE / export, and the WebSocket event stream."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import websockets
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import Stack

FAN = """
name: fan
namespace: {ns}
layer: {layer}
init_message: {{route: load, payload: {{count: {count}}}}}
routes:
  - name: load
    handler: tests.handlers:fanout
    stage: raw
    next: [copy]
  - name: copy
    handler: tests.handlers:copy
    stage: copied
"""

CHATTY = """
name: chatty
init_message: {{route: talk}}
routes:
  - name: talk
    handler: tests.handlers:chatty
    stage: out
    params: {{pause: {pause}}}
"""


async def sse_events(response: httpx.Response) -> list[tuple[str, dict[str, Any], float]]:
    events, name, loop = [], None, asyncio.get_running_loop()
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: ") and name:
            events.append((name, json.loads(line[6:]), loop.time()))
            name = None
    return events


async def test_list_filters_sort_and_pagination(stack: Stack) -> None:
    a = await stack.create_config(FAN.format(ns="shop", layer="silver", count=1))
    b = await stack.create_config(FAN.format(ns="shop", layer="gold", count=3))
    ids = []
    for config, tag in ((a, "a1"), (b, "b1"), (a, "a2")):
        ids.append((await stack.run(config["id"], tag=tag)).json()["id"])
        await stack.wait(ids[-1])
    failing = await stack.create_config(
        "name: broken\ninit_message: {route: x}\nroutes:\n  - {name: x, handler: 'tests.handlers:fatal', stage: s}\n"
    )
    ids.append((await stack.run(failing["id"])).json()["id"])
    await stack.wait(ids[-1])
    child = await stack.http.post(
        f"/api/v1/executions/{ids[0]}/replay",
        json={"replay_source": "storage", "from_stage": "raw", "to_route": "copy"},
    )
    await stack.wait(child.json()["id"])

    async def listed(**params: Any) -> dict[str, Any]:
        resp = await stack.http.get("/api/v1/executions", params=params)
        assert resp.status_code == 200, resp.text
        return resp.json()

    everything = await listed()
    assert everything["total"] == 5 and everything["limit"] == 50 and everything["offset"] == 0
    assert [e["created_at"] for e in everything["items"]] == sorted(
        (e["created_at"] for e in everything["items"]), reverse=True
    )
    assert (await listed(status="failed"))["total"] == 1
    assert (await listed(status="completed"))["total"] == 4
    assert {e["tag"] for e in (await listed(config_id=a["id"]))["items"]} >= {"a1", "a2"}
    assert (await listed(pipeline="broken"))["items"][0]["id"] == ids[3]
    assert (await listed(namespace="shop", layer="gold"))["total"] == 1
    assert (await listed(tag="b1"))["items"][0]["id"] == ids[1]
    assert (await listed(trigger="replay"))["items"][0]["id"] == child.json()["id"]
    assert (await listed(parent_execution_id=ids[0]))["total"] == 1
    first_created = everything["items"][-1]["created_at"]
    assert (await listed(**{"from": first_created}))["total"] == 5
    assert (await listed(to=first_created))["total"] == 1
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert (await listed(**{"from": future}))["total"] == 0

    asc = await listed(sort="created_at", order="asc", limit=2)
    assert [e["id"] for e in asc["items"]] == ids[:2] and asc["total"] == 5
    page3 = await listed(sort="created_at", order="asc", limit=2, offset=4)
    assert [e["id"] for e in page3["items"]] == [child.json()["id"]]
    beyond = await listed(offset=10)
    assert beyond["items"] == [] and beyond["total"] == 5
    by_duration = await listed(sort="duration_ms", order="desc")
    durations = [e["duration_ms"] for e in by_duration["items"]]
    assert durations == sorted(durations, reverse=True)

    for bad in (
        {"limit": 0},
        {"limit": 201},
        {"offset": -1},
        {"status": "success"},
        {"sort": "tag"},
        {"from": "yesterday"},
        {"order": "up"},
    ):
        resp = await stack.http.get("/api/v1/executions", params=bad)
        assert resp.status_code == 422, bad


async def test_list_queries_use_indexes(stack: Stack) -> None:
    await stack.http.get("/api/v1/executions")  # migrations applied
    engine = create_async_engine(stack.settings.resolved_database_url)
    queries = [
        "SELECT id FROM executions ORDER BY created_at DESC LIMIT 50",
        "SELECT id FROM executions WHERE status = 'failed' ORDER BY created_at DESC LIMIT 50",
        "SELECT id FROM executions WHERE namespace = 'a' AND layer = 'b' AND pipeline = 'c' ORDER BY created_at DESC LIMIT 50",
        "SELECT id FROM executions WHERE config_id = 'x' LIMIT 50",
        "SELECT id FROM executions WHERE tag = 'x'",
        "SELECT id FROM executions WHERE parent_execution_id = 'x'",
        "SELECT id FROM executions ORDER BY duration_ms DESC LIMIT 50",
        "SELECT id FROM executions WHERE trigger = 'manual' ORDER BY created_at DESC LIMIT 50",
        "SELECT id FROM execution_logs WHERE execution_id = 'x' AND id > 5 ORDER BY id",
    ]
    async with engine.connect() as conn:
        for query in queries:
            plan = " | ".join(
                str(row[-1]) for row in (await conn.execute(text("EXPLAIN QUERY PLAN " + query))).all()
            )
            assert "USING INDEX" in plan or "USING COVERING INDEX" in plan or "PRIMARY KEY" in plan, (
                query,
                plan,
            )
            assert "TEMP B-TREE" not in plan, (query, plan)
    await engine.dispose()


async def test_node_runs_match_objects_on_disk(stack: Stack) -> None:
    config = await stack.create_config(FAN.format(ns="default", layer="default", count=7))
    done = await stack.wait((await stack.run(config["id"])).json()["id"])
    routes = {
        r["route"]: r
        for r in (await stack.http.get(f"/api/v1/executions/{done['id']}/routes")).json()["routes"]
    }
    assert routes["load"]["objects_written"] == len(stack.objects(done["id"], "raw")) == 7
    assert routes["copy"]["objects_written"] == len(stack.objects(done["id"], "copied")) == 7
    assert routes["copy"]["messages_in"] == routes["load"]["messages_out"] == 7
    assert routes["copy"]["duration_ms"] is not None and routes["copy"]["started_at"]
    run = (await stack.http.get(f"/api/v1/runs/{done['id']}")).json()
    nodes = {n["node_id"]: n for n in run["node_runs"]}
    assert nodes["copy"]["status"] == "success" and nodes["copy"]["objects_written"] == 7
    assert set(nodes["load"]) >= {"id", "node_id", "status", "row_count", "duration_ms", "started_at"}


async def test_logs_json_filters_and_export(stack: Stack) -> None:
    config = await stack.create_config(CHATTY.format(pause=0))
    done = await stack.wait((await stack.run(config["id"])).json()["id"])
    body = (await stack.http.get(f"/api/v1/executions/{done['id']}/logs")).json()
    assert body["status"] == "completed" and body["execution_id"] == done["id"]
    messages = [entry["message"] for entry in body["logs"]]
    assert messages[0].startswith("execution started")
    assert "warn line from talk" in messages and messages[-1] == "execution completed"
    handler = [e for e in body["logs"] if e["kind"] == "handler"]
    assert [e["level"] for e in handler] == ["debug", "info", "warn", "error"]
    assert all(e["route"] == "talk" for e in handler)

    warn_up = (
        await stack.http.get(
            f"/api/v1/executions/{done['id']}/logs", params={"level": "warn", "route": "talk"}
        )
    ).json()
    assert {e["level"] for e in warn_up["logs"]} <= {"warn", "error"} and len(warn_up["logs"]) >= 2
    later = (
        await stack.http.get(
            f"/api/v1/executions/{done['id']}/logs", params={"since": body["logs"][-1]["timestamp"]}
        )
    ).json()
    assert 1 <= len(later["logs"]) < len(body["logs"])
    assert (
        await stack.http.get(f"/api/v1/executions/{done['id']}/logs", params={"level": "loud"})
    ).status_code == 422

    export = await stack.http.get(f"/api/v1/executions/{done['id']}/logs/export")
    assert export.status_code == 200 and "attachment" in export.headers["content-disposition"]
    assert "WARN  [talk] warn line from talk" in export.text
    jsonl = await stack.http.get(f"/api/v1/executions/{done['id']}/logs/export", params={"format": "jsonl"})
    assert len(jsonl.text.splitlines()) == len(body["logs"])
    assert (await stack.http.get(f"/api/v1/executions/{uuid.uuid4()}/logs")).status_code == 404


async def test_sse_of_a_finished_run_sends_everything_and_closes(stack: Stack) -> None:
    config = await stack.create_config(CHATTY.format(pause=0))
    done = await stack.wait((await stack.run(config["id"])).json()["id"])
    async with stack.http.stream(
        "GET", f"/api/v1/executions/{done['id']}/logs", headers={"Accept": "text/event-stream"}
    ) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = await asyncio.wait_for(sse_events(resp), 10)
    names = [e[0] for e in events]
    assert names[-1] == "status" and names.count("status") == 1 and "error" not in names
    assert events[-1][1] == {"status": "completed", "rows_written": 7, "duration_ms": done["duration_ms"]}
    assert {"timestamp", "level", "message"} <= set(events[0][1])


async def test_sse_of_a_live_run_pushes_lines_until_the_end(stack: Stack) -> None:
    config = await stack.create_config(CHATTY.format(pause=0.6))
    started = (await stack.run(config["id"])).json()
    async with stack.http.stream(
        "GET", f"/api/v1/runs/{started['id']}/logs", headers={"Accept": "text/event-stream"}
    ) as resp:
        events = await asyncio.wait_for(sse_events(resp), 30)
    names = [e[0] for e in events]
    assert (
        names[-1] == "status" and events[-1][1]["status"] == "success" and events[-1][1]["rows_written"] == 7
    )
    lines = [(d["message"], t) for n, d, t in events if n == "log"]
    messages = [m for m, _ in lines]
    assert "debug line from talk" in messages and "error line from talk" in messages
    # Lines arrived as they were written, not all at the end.
    first, last = dict(lines)["debug line from talk"], dict(lines)["error line from talk"]
    assert last - first > 1.0
    assert set(events[1][1]) == {"timestamp", "level", "message"}


async def test_sse_reports_errors_of_failed_runs(stack: Stack) -> None:
    config = await stack.create_config(
        "name: broken\ninit_message: {route: x}\nroutes:\n  - {name: x, handler: 'tests.handlers:fatal', stage: s}\n"
    )
    done = await stack.wait((await stack.run(config["id"])).json()["id"])
    async with stack.http.stream(
        "GET", f"/api/v1/runs/{done['id']}/logs", headers={"Accept": "text/event-stream"}
    ) as resp:
        events = await sse_events(resp)
    assert [e[0] for e in events][-2:] == ["error", "status"]
    assert "retrying will not help" in events[-2][1]["message"]
    assert events[-1][1]["status"] == "failed"


async def test_websocket_streams_status_nodes_and_logs(stack: Stack) -> None:
    ws_url = stack.base_url.replace("http", "ws") + "/api/ws"
    config = await stack.create_config(FAN.format(ns="default", layer="default", count=2))
    async with websockets.connect(ws_url) as everything:
        hello = json.loads(await everything.recv())
        assert hello["type"] == "connected"
        run = (await stack.run(config["id"])).json()
        seen: list[dict[str, Any]] = []
        while not any(e["type"] == "run_status" and e["status"] == "completed" for e in seen):
            seen.append(json.loads(await asyncio.wait_for(everything.recv(), 30)))
    mine = [e for e in seen if e["execution_id"] == run["id"]]
    types = [e["type"] for e in mine]
    assert types[0] == "run_status" and mine[0]["status"] == "running"
    nodes = [e for e in mine if e["type"] == "node_completed"]
    assert {n["route"] for n in nodes} == {"load", "copy"} and all(n["status"] == "completed" for n in nodes)
    assert any(e["type"] == "log" and e["message"] == "emitted 2" for e in mine)
    final = next(e for e in mine if e["type"] == "run_status" and e["status"] == "completed")
    assert final["run_status"] == "success"

    # A late client catches up with since_id and can filter by execution.
    first_id = mine[0]["id"]
    async with websockets.connect(f"{ws_url}?execution_id={run['id']}&since_id={first_id - 1}") as late:
        assert json.loads(await late.recv())["type"] == "connected"
        replayed = [json.loads(await asyncio.wait_for(late.recv(), 10)) for _ in range(3)]
        assert replayed[0]["type"] == "run_status" and replayed[0]["execution_id"] == run["id"]

    # A client that disconnects mid-stream leaves the server healthy.
    abrupt = await websockets.connect(ws_url)
    await abrupt.recv()
    await abrupt.close()
    second = (await stack.run(config["id"])).json()
    assert (await stack.wait(second["id"]))["status"] == "completed"
    async with websockets.connect(f"{ws_url}?execution_id=not-there") as bad:
        assert json.loads(await bad.recv())["type"] == "error"


RUN_FIELDS = {
    "id",
    "namespace",
    "layer",
    "pipeline",
    "status",
    "trigger",
    "started_at",
    "finished_at",
    "duration_ms",
    "rows_written",
    "error",
    "created_at",
}


async def test_runs_facade_shapes_and_codes(stack: Stack, tmp_path: Any) -> None:
    await stack.create_config(FAN.format(ns="default", layer="silver", count=2))
    created = await stack.http.post(
        "/api/v1/runs", json={"namespace": "default", "layer": "silver", "pipeline": "fan"}
    )
    assert created.status_code == 202 and set(created.json()) == {"run_id", "status"}
    assert created.json()["status"] == "pending"
    run_id = created.json()["run_id"]
    await stack.wait(run_id)
    run = (await stack.http.get(f"/api/v1/runs/{run_id}")).json()
    assert RUN_FIELDS <= set(run) and run["status"] == "success" and run["trigger"] == "manual"
    assert run["finished_at"] and run["duration_ms"] >= 0 and run["error"] is None
    assert (run["namespace"], run["layer"], run["pipeline"]) == ("default", "silver", "fan")

    scheduled = await stack.http.post(
        "/api/v1/runs",
        json={"namespace": "default", "layer": "silver", "pipeline": "fan", "trigger": "schedule:hourly"},
    )
    await stack.wait(scheduled.json()["run_id"])
    listing = (
        await stack.http.get(
            "/api/v1/runs", params={"namespace": "default", "layer": "silver", "pipeline": "fan"}
        )
    ).json()
    assert set(listing) == {"runs", "total"} and listing["total"] == 2
    assert RUN_FIELDS <= set(listing["runs"][0])
    assert {r["trigger"] for r in listing["runs"]} == {"manual", "schedule:hourly"}
    assert (await stack.http.get("/api/v1/runs", params={"status": "success"})).json()["total"] == 2
    assert (await stack.http.get("/api/v1/runs", params={"status": "pending"})).json()["total"] == 0
    oldest = (await stack.http.get("/api/v1/runs", params={"order": "asc", "limit": 1})).json()["runs"][0]
    assert oldest["id"] == run_id

    for params in ({"status": "done"}, {"limit": 500}, {"limit": "x"}, {"from": "nope"}, {"sort": "tag"}):
        bad = await stack.http.get("/api/v1/runs", params=params)
        assert bad.status_code == 400 and bad.json()["error_code"] == "INVALID_ARGUMENT", params
    missing_field = await stack.http.post("/api/v1/runs", json={"namespace": "default", "layer": "silver"})
    assert missing_field.status_code == 400 and missing_field.json()["error_code"] == "INVALID_ARGUMENT"
    unknown = await stack.http.post("/api/v1/runs", json={"namespace": "x", "layer": "y", "pipeline": "z"})
    assert unknown.status_code == 404 and unknown.json()["error_code"] == "NOT_FOUND"
    assert (await stack.http.get(f"/api/v1/runs/{uuid.uuid4()}")).json()["error_code"] == "NOT_FOUND"

    logs = (await stack.http.get(f"/api/v1/runs/{run_id}/logs")).json()
    assert logs["status"] == "success" and set(logs["logs"][0]) == {"timestamp", "level", "message"}

    # Cancel: 200 while running, 409 ALREADY_EXISTS once terminal, 404 unknown.
    marker = tmp_path / "started"
    await stack.create_config(
        f"name: sleepy\nlayer: silver\ninit_message: {{route: s}}\nroutes:\n"
        f"  - {{name: s, handler: 'tests.handlers:slow', stage: o, params: {{marker: '{marker}'}}}}\n"
    )
    slow = (
        await stack.http.post(
            "/api/v1/runs", json={"namespace": "default", "layer": "silver", "pipeline": "sleepy"}
        )
    ).json()
    for _ in range(200):
        if marker.exists():
            break
        await asyncio.sleep(0.05)
    cancelled = await stack.http.post(f"/api/v1/runs/{slow['run_id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json() == {
        "run_id": slow["run_id"],
        "status": "cancelled",
    }
    assert (await stack.http.get(f"/api/v1/runs/{slow['run_id']}")).json()["status"] == "cancelled"
    again = await stack.http.post(f"/api/v1/runs/{slow['run_id']}/cancel")
    assert again.status_code == 409 and again.json()["error_code"] == "ALREADY_EXISTS"
    assert (await stack.http.post(f"/api/v1/runs/{uuid.uuid4()}/cancel")).status_code == 404


async def test_interrupted_run_shows_as_failed_with_reason(stack: Stack) -> None:
    config = await stack.create_config(
        "name: sleepy\ninit_message: {route: s}\nroutes:\n  - {name: s, handler: 'tests.handlers:slow', stage: o}\n"
    )
    run = (await stack.run(config["id"])).json()
    await stack.temporal.get_workflow_handle(f"sluice-exec-{run['id']}").terminate("gone")
    body = (await stack.http.get(f"/api/v1/runs/{run['id']}")).json()
    assert body["status"] == "failed" and body["error"].startswith("interrupted")
    assert (await stack.http.get(f"/api/v1/executions/{run['id']}")).json()["status"] == "interrupted"


@pytest.mark.parametrize("path", ["/api/v1/executions/{id}", "/api/v1/runs/{id}"])
async def test_responses_link_to_the_temporal_ui(stack: Stack, path: str) -> None:
    config = await stack.create_config(FAN.format(ns="default", layer="default", count=1))
    run = (await stack.run(config["id"])).json()
    body = (await stack.http.get(path.format(id=run["id"]))).json()
    assert (
        body["temporal_ui_url"]
        == f"http://127.0.0.1:8233/namespaces/default/workflows/sluice-exec-{run['id']}"
    )
    await stack.wait(run["id"])
    # The record is final as the workflow's last activity commits; the workflow closes just after.
    handle = stack.temporal.get_workflow_handle(f"sluice-exec-{run['id']}")
    await handle.result()
    # The search attributes the UI filters on are set on the workflow.
    desc = await handle.describe()
    names = {pair.key.name for pair in desc.typed_search_attributes}
    assert {"SluicePipeline", "SluiceConfigId", "SluiceNamespace", "SluiceLayer"} <= names
    # Temporal's visibility store (what the UI lists) is eventually consistent: poll, bounded.
    query = f"SluicePipeline = 'fan' AND ExecutionStatus = 'Completed' AND WorkflowId = '{handle.id}'"
    for _ in range(100):
        if [w async for w in stack.temporal.list_workflows(query)]:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"{handle.id} not listed as completed by visibility within 10s")
