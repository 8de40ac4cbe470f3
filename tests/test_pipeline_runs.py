"""Seed 002's run API at its own paths (/api/pipelines, /api/runs) over HTTP against a real
Temporal server: shapes and codes, params, graceful cancel, resume."""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import Stack

FAIL = ["item-00003.txt", "item-00012.txt"]


def four_routes(tmp_path: Path, count: int = 20) -> str:
    params = {"fail": FAIL, "broken": str(tmp_path / "broken"), "tally": str(tmp_path / "tally")}
    return f"""
name: four
init_message:
  route: load
  payload: {{count: {count}}}
params: {json.dumps(params)}
routes:
  - {{name: load, handler: "tests.handlers:fanout", stage: raw, next: [up]}}
  - {{name: up, handler: "tests.handlers:counted_copy", stage: up, next: [check]}}
  - {{name: check, handler: "tests.handlers:picky", stage: checked, next: [final], retry: {{max_attempts: 1}}}}
  - {{name: final, handler: "tests.handlers:counted_copy", stage: final}}
"""


async def wait_run(stack: Stack, run_id: str, timeout: float = 90.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        resp = await stack.http.get(f"/api/runs/{run_id}")
        assert resp.status_code == 200, resp.text
        body = resp.json()
        if body["status"] not in ("pending", "running"):
            return body
        assert asyncio.get_running_loop().time() < deadline, f"run {run_id} still {body['status']}"
        await asyncio.sleep(0.1)


def stage_files(stack: Stack, execution_id: str, stage: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in stack.objects(execution_id, stage)}


def tally(tmp_path: Path) -> list[str]:
    path = tmp_path / "tally"
    return sorted(path.read_text().splitlines()) if path.exists() else []


async def trigger(stack: Stack, pipeline_id: str, body: Any = None) -> str:
    resp = await stack.http.post(f"/api/pipelines/{pipeline_id}/run", json=body)
    assert resp.status_code == 202, resp.text
    accepted = resp.json()
    assert accepted == {"id": accepted["id"], "pipeline_id": pipeline_id, "status": "pending"}
    return accepted["id"]


async def test_resume_redoes_only_what_failed(stack: Stack, tmp_path: Path) -> None:
    config = await stack.create_config(four_routes(tmp_path))
    clean = await wait_run(stack, await trigger(stack, config["id"]))
    assert clean["status"] == "success"
    clean_final = stage_files(stack, clean["id"], "final")
    assert len(clean_final) == 20

    (tmp_path / "broken").write_text("yes")
    failed = await wait_run(stack, await trigger(stack, config["id"]))
    assert failed["status"] == "failed" and "cannot handle item-000" in failed["error"]
    nodes = {n["node_id"]: n for n in failed["node_runs"]}
    assert {k: n["status"] for k, n in nodes.items()} == {
        "load": "success",
        "up": "success",
        "check": "failed",
        "final": "success",  # it handled everything that reached it
    }
    routes = (await stack.http.get(f"/api/v1/executions/{failed['id']}/routes")).json()["routes"]
    check = next(r for r in routes if r["route"] == "check")
    assert (check["messages_processed"], check["messages_failed"]) == (18, 2)

    (tmp_path / "broken").unlink()  # the fix
    (tmp_path / "tally").unlink()
    resp = await stack.http.post(f"/api/runs/{failed['id']}/resume")
    assert resp.status_code == 202, resp.text
    resumed_id = resp.json()["id"]
    assert resp.json() == {"id": resumed_id, "pipeline_id": config["id"], "status": "pending"}
    resumed = await wait_run(stack, resumed_id)
    assert resumed["status"] == "success" and resumed["parent_run_id"] == failed["id"]
    assert {n["node_id"]: n["status"] for n in resumed["node_runs"]} == {
        "load": "skipped",
        "up": "skipped",
        "check": "success",
        "final": "success",
    }
    # Exactly the two messages that failed, and what lies downstream of them, ran again.
    assert tally(tmp_path) == sorted(f"{route} {name}" for route in ("check", "final") for name in FAIL)
    # The resumed run's stages hold what a clean run's hold, byte for byte.
    assert stage_files(stack, resumed_id, "final") == clean_final
    for stage in ("raw", "up", "checked"):
        assert stage_files(stack, resumed_id, stage).keys() == stage_files(stack, clean["id"], stage).keys()
    execution = (await stack.http.get(f"/api/v1/executions/{resumed_id}")).json()
    assert execution["trigger"] == "resume" and execution["parent_execution_id"] == failed["id"]
    assert execution["resume"]["objects_carried"] == 20 + 20 + 18 + 18
    assert execution["resume"]["messages_pending"] == {"check": 2}
    sidecar = json.loads((stack.storage_root / resumed_id / "final" / "item-00000.txt.meta.json").read_text())
    assert sidecar["execution_id"] == resumed_id
    assert sidecar["carried_from"] == f"{failed['id']}/final/item-00000.txt"
    # Lineage of a carried object walks back into the run that made it.
    lineage = await stack.http.get(
        f"/api/v1/executions/{resumed_id}/lineage",
        params={"object_key": f"{resumed_id}/final/item-00000.txt"},
    )
    assert lineage.status_code == 200, lineage.text
    assert {n["execution_id"] for n in lineage.json()["nodes"]} >= {resumed_id, failed["id"]}

    # Only failed, cancelled or interrupted runs resume; the answer names the current status.
    again = await stack.http.post(f"/api/runs/{resumed_id}/resume")
    assert again.status_code == 409 and again.json()["status"] == "success"
    v1 = await stack.http.post(f"/api/v1/executions/{resumed_id}/resume")
    assert v1.status_code == 409 and v1.json()["error_code"] == "EXECUTION_NOT_RESUMABLE"
    assert v1.json()["status"] == "completed"


async def test_resume_with_the_latest_config(stack: Stack, tmp_path: Path) -> None:
    """Users fix the bug, then resume: `config: latest` runs the new version's routes."""
    (tmp_path / "broken").write_text("yes")
    config = await stack.create_config(four_routes(tmp_path))
    failed = await wait_run(stack, await trigger(stack, config["id"]))
    assert failed["status"] == "failed"
    fixed = four_routes(tmp_path).replace('"fail": ["item-00003.txt", "item-00012.txt"]', '"fail": []')
    resp = await stack.http.put(
        f"/api/v1/configs/{config['id']}", content=fixed, headers={"Content-Type": "application/yaml"}
    )
    assert resp.status_code == 200, resp.text
    snapshot = await stack.http.post(f"/api/v1/executions/{failed['id']}/resume")
    assert snapshot.status_code == 200, snapshot.text
    assert (await stack.wait(snapshot.json()["id"]))["status"] == "failed"  # same config, same bug
    latest = await stack.http.post(f"/api/v1/executions/{failed['id']}/resume", json={"config": "latest"})
    assert latest.status_code == 200, latest.text
    body = await stack.wait(latest.json()["id"])
    assert body["status"] == "completed" and body["config_version"] == 2
    assert len(stage_files(stack, body["id"], "final")) == 20


async def test_resume_fails_loudly_when_stored_outputs_are_missing(stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "broken").write_text("yes")
    config = await stack.create_config(four_routes(tmp_path))
    failed = await wait_run(stack, await trigger(stack, config["id"]))
    (stack.storage_root / failed["id"] / "up" / "item-00001.txt").unlink()
    (tmp_path / "broken").unlink()
    resp = await stack.http.post(f"/api/runs/{failed['id']}/resume")
    resumed = await wait_run(stack, resp.json()["id"])
    assert resumed["status"] == "failed"
    assert "missing" in resumed["error"] and f"{failed['id']}/up/item-00001.txt" in resumed["error"]


async def test_resume_after_a_big_batch_failed_sends_each_message_once(stack: Stack, tmp_path: Path) -> None:
    """A batch emitting thousands of messages stores their lineage and pages while it runs; when it
    fails afterwards, a resume re-runs it once and sends none of its earlier outputs again."""
    count = 2500
    broken = tmp_path / "broken"
    broken.write_text("yes")
    config = await stack.create_config(
        f"""
name: bigfail
init_message: {{route: load, payload: {{count: {count}}}}}
params: {{broken: "{broken}"}}
routes:
  - {{name: load, handler: "tests.handlers:fanout_then_fail", stage: raw, next: [sink], retry: {{max_attempts: 1}}}}
  - {{name: sink, handler: noop}}
"""
    )
    failed = await wait_run(stack, await trigger(stack, config["id"]))
    assert failed["status"] == "failed" and "broken after emitting" in failed["error"]
    broken.unlink()
    resp = await stack.http.post(f"/api/v1/executions/{failed['id']}/resume")
    assert resp.status_code == 200, resp.text
    resumed = await stack.wait(resp.json()["id"], timeout=120)
    assert resumed["status"] == "completed", resumed
    assert resumed["resume"]["messages_pending"] == {"load": 1}
    routes = {
        r["route"]: r
        for r in (await stack.http.get(f"/api/v1/executions/{resumed['id']}/routes")).json()["routes"]
    }
    assert (routes["sink"]["messages_in"], routes["sink"]["messages_processed"]) == (count, count)
    assert len(stack.objects(resumed["id"], "raw")) == count


async def test_an_interrupted_run_resumes(stack: Stack, tmp_path: Path) -> None:
    """A workflow terminated outside Sluice reads as failed (interrupted) and resumes like one."""
    config = await stack.create_config(
        """
name: slowcopy
init_message: {route: load, payload: {count: 4}}
params: {sleep: 0.5}
routes:
  - {name: load, handler: "tests.handlers:fanout", stage: raw, next: [copy]}
  - {name: copy, handler: "tests.handlers:slow_copy", stage: copied, batch_size: 1, concurrency: 1}
"""
    )
    run_id = await trigger(stack, config["id"])
    for _ in range(200):
        if len(stack.objects(run_id, "copied")) >= 1:
            break
        await asyncio.sleep(0.05)
    await stack.temporal.get_workflow_handle(f"sluice-exec-{run_id}").terminate("operator pulled the plug")
    run = await wait_run(stack, run_id)
    assert run["status"] == "failed" and run["error"].startswith("interrupted")
    resumed = await wait_run(stack, (await stack.http.post(f"/api/runs/{run_id}/resume")).json()["id"])
    assert resumed["status"] == "success"
    assert sorted(p.name for p in stack.objects(resumed["id"], "copied")) == [
        f"item-{i:05d}.txt" for i in range(4)
    ]


async def test_graceful_cancel_lets_running_nodes_finish(stack: Stack, tmp_path: Path) -> None:
    config = await stack.create_config(
        """
name: slowcopy
init_message: {route: load, payload: {count: 5}}
params: {sleep: 1.5}
routes:
  - {name: load, handler: "tests.handlers:fanout", stage: raw, next: [copy]}
  - {name: copy, handler: "tests.handlers:slow_copy", stage: copied, batch_size: 1, concurrency: 1}
"""
    )
    run_id = await trigger(stack, config["id"])
    for _ in range(200):
        body = (await stack.http.get(f"/api/runs/{run_id}")).json()
        if any(n["node_id"] == "copy" and n["status"] == "running" for n in body["node_runs"]):
            break
        await asyncio.sleep(0.05)
    resp = await stack.http.post(f"/api/runs/{run_id}/cancel")
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"id": run_id, "pipeline_id": config["id"], "status": "cancelled"}
    run = (await stack.http.get(f"/api/runs/{run_id}")).json()
    assert run["status"] == "cancelled"
    copy = next(n for n in run["node_runs"] if n["node_id"] == "copy")
    # The batch in flight finished and its output is stored; nothing queued started.
    assert copy["status"] == "cancelled" and copy["messages_in"] == 5
    assert len(stack.objects(run_id, "copied")) == 1
    cancel_again = await stack.http.post(f"/api/runs/{run_id}/cancel")
    assert cancel_again.status_code == 409
    # A cancelled run resumes with what it did not do.
    resumed = await wait_run(stack, (await stack.http.post(f"/api/runs/{run_id}/resume")).json()["id"])
    assert resumed["status"] == "success"
    assert len(stack.objects(resumed["id"], "copied")) == 5


async def test_v1_cancel_takes_a_graceful_mode(stack: Stack) -> None:
    config = await stack.create_config(
        """
name: slowcopy
init_message: {route: load, payload: {count: 4}}
params: {sleep: 1.0}
routes:
  - {name: load, handler: "tests.handlers:fanout", stage: raw, next: [copy]}
  - {name: copy, handler: "tests.handlers:slow_copy", stage: copied, batch_size: 2, concurrency: 1}
"""
    )
    execution_id = (await stack.run(config["id"])).json()["id"]
    for _ in range(200):
        routes = (await stack.http.get(f"/api/v1/executions/{execution_id}/routes")).json()["routes"]
        if routes[1]["in_flight"]:
            break
        await asyncio.sleep(0.05)
    bad = await stack.http.post(f"/api/v1/executions/{execution_id}/cancel", params={"mode": "later"})
    assert bad.status_code == 422
    resp = await stack.http.post(f"/api/v1/executions/{execution_id}/cancel", params={"mode": "graceful"})
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled"
    assert len(stack.objects(execution_id, "copied")) == 2  # the whole batch in flight


async def test_params_override_and_fill_the_init_payload(stack: Stack) -> None:
    config = await stack.create_config(
        """
name: dated
init_message:
  route: only
  payload: {day: "${param.date}", limit: "${param.limit}", note: "run for ${param.date}", literal: "$${param.date}"}
params: {limit: 5, region: eu}
routes:
  - {name: only, handler: "tests.handlers:show_params", stage: out}
"""
    )
    report = await stack.http.post(
        "/api/v1/configs/validate", content=config["yaml"], headers={"Content-Type": "application/yaml"}
    )
    assert [i["code"] for i in report.json()["issues"]] == ["W601", "W601"]  # `date`: not declared

    run_id = await trigger(stack, config["id"], {"params": {"date": "2024-01-15", "limit": 7}})
    run = await wait_run(stack, run_id)
    assert run["status"] == "success" and run["params"] == {"date": "2024-01-15", "limit": 7}
    seen = json.loads((stack.storage_root / run_id / "out" / "seen.json").read_text())
    assert seen["payload"] == {
        "day": "2024-01-15",
        "limit": 7,
        "note": "run for 2024-01-15",
        "literal": "${param.date}",
    }
    assert seen["params"] == {"limit": 7, "region": "eu", "date": "2024-01-15"}

    missing = await stack.http.post(f"/api/pipelines/{config['id']}/run", json={"params": {"limit": 1}})
    assert missing.status_code == 400 and missing.json()["error_code"] == "UNKNOWN_PARAM"
    assert "${param.date}" in missing.json()["detail"]
    bad = await stack.http.post(f"/api/pipelines/{config['id']}/run", json={"params": {"bad name": 1}})
    assert bad.status_code == 400 and bad.json()["error_code"] == "INVALID_PARAMS"

    v1 = await stack.run(config["id"], {"params": {"date": "2024-02-01"}})
    assert v1.status_code == 200, v1.text
    assert v1.json()["params"] == {"date": "2024-02-01"}
    facade = await stack.http.post(
        "/api/v1/runs",
        json={
            "namespace": "default",
            "layer": "default",
            "pipeline": "dated",
            "params": {"date": "2024-03-01"},
        },
    )
    assert facade.status_code == 202, facade.text
    body = await stack.wait(facade.json()["run_id"])
    assert json.loads((stack.storage_root / body["id"] / "out" / "seen.json").read_text())["payload"][
        "day"
    ] == ("2024-03-01")


async def test_shapes_lists_logs_and_codes(stack: Stack, tmp_path: Path) -> None:
    config = await stack.create_config(four_routes(tmp_path, count=3))
    pid = config["id"]
    ids = [await trigger(stack, pid) for _ in range(3)]
    for run_id in ids:
        await wait_run(stack, run_id)

    run = (await stack.http.get(f"/api/runs/{ids[0]}")).json()
    assert {
        "id",
        "pipeline_id",
        "status",
        "started_at",
        "finished_at",
        "error",
        "params",
        "node_runs",
    } <= run.keys()
    node = run["node_runs"][0]
    assert {"id", "node_id", "status", "row_count", "duration_ms", "started_at"} <= node.keys()
    assert node["node_id"] == "load" and node["status"] == "success" and node["duration_ms"] >= 0

    recent = (await stack.http.get(f"/api/pipelines/{pid}/runs")).json()
    assert [r["id"] for r in recent] == ids[::-1]
    page = (await stack.http.get(f"/api/pipelines/{pid}/runs", params={"page": 2, "per_page": 2})).json()
    assert page == {"items": page["items"], "total": 3, "page": 2, "per_page": 2, "pages": 2}
    assert [r["id"] for r in page["items"]] == [ids[0]]
    alias = (await stack.http.get(f"/api/pipelines/{pid}/runs", params={"page_size": 1})).json()
    assert alias["per_page"] == 1 and alias["pages"] == 3 and alias["items"][0]["id"] == ids[2]
    assert (await stack.http.get(f"/api/pipelines/{pid}/runs", params={"per_page": 0})).status_code == 422

    for path in ("/api/pipelines/nope/runs", f"/api/runs/{'0' * 8}"):
        resp = await stack.http.get(path)
        assert resp.status_code == 404 and {"detail", "error_code", "timestamp"} <= resp.json().keys()
    unknown = await stack.http.post("/api/pipelines/pipeline-xyz/run", json={"params": {}})
    assert unknown.status_code == 404 and unknown.json()["error_code"] == "PIPELINE_NOT_FOUND"

    logs = (await stack.http.get(f"/api/runs/{ids[0]}/logs")).json()
    assert logs and all(set(e) == {"run_id", "node_id", "level", "message", "timestamp"} for e in logs)
    assert {e["level"] for e in logs} <= {"debug", "info", "warning", "error"}
    assert any(e["node_id"] == "load" and e["message"] == "emitted 3" for e in logs)
    only_load = (await stack.http.get(f"/api/runs/{ids[0]}/logs", params={"node_id": "load"})).json()
    assert only_load and {e["node_id"] for e in only_load} == {"load"}
    errors = (await stack.http.get(f"/api/runs/{ids[0]}/logs", params={"level": "error"})).json()
    assert errors == []
    assert (await stack.http.get(f"/api/runs/{ids[0]}/logs", params={"level": "loud"})).status_code == 422
    export = await stack.http.get(f"/api/runs/{ids[0]}/logs/export")
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/plain")
    assert len(export.text.splitlines()) == len(logs)


SEED_CURLS = [
    # (the seed's line, expected status)
    (
        """curl -X POST http://localhost:8080/api/pipelines/{pipeline_id}/run \\
-H "Content-Type: application/json" \\
-d '{"params": {"date": "2024-01-15"}}'""",
        202,
    ),
    ("curl http://localhost:8080/api/runs/{run_id}", 200),
    ("curl http://localhost:8080/api/pipelines/{pipeline_id}/runs", 200),
    ('curl "http://localhost:8080/api/pipelines/{pipeline_id}/runs?page=1&per_page=20"', 200),
    ("curl http://localhost:8080/api/runs/{run_id}/logs", 200),
    ("curl http://localhost:8080/api/runs/{run_id}/logs/export", 200),
    ("curl -X POST http://localhost:8080/api/runs/{run_id}/resume", 202),
    ("curl -X POST http://localhost:8080/api/runs/{run_id}/cancel", 409),  # a finished run
    (
        """curl -X POST http://localhost:8080/api/pipelines/{pipeline_id}/backfill \\
-H "Content-Type: application/json" \\
-d '{"start_date": "2024-01-01", "end_date": "2024-01-31"}'""",
        202,
    ),
    ("curl http://localhost:8080/api/scheduler/status", 200),
]


async def curl(stack: Stack, line: str, **ids: str) -> tuple[int, str]:
    """Run one seed curl line as written, pointed at the test server and given its ids."""
    command = line.replace("\\\n", " ").replace("http://localhost:8080", stack.base_url)
    for name, value in ids.items():
        command = command.replace("{" + name + "}", value)
    args = shlex.split(command)
    proc = await asyncio.create_subprocess_exec(
        *args[:1], "-s", "-w", "\n%{http_code}", *args[1:], stdout=subprocess.PIPE
    )
    out, _ = await proc.communicate()
    body, _, code = out.decode().rpartition("\n")
    return int(code), body


async def test_the_seed_curl_examples_verbatim(stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "broken").write_text("yes")
    config = await stack.create_config(
        four_routes(tmp_path, count=4).replace("init_message:", "params_note: date\ninit_message:")
    )
    failed = await wait_run(stack, await trigger(stack, config["id"]))
    assert failed["status"] == "failed"
    (tmp_path / "broken").unlink()
    runs: list[str] = []
    for line, expected in SEED_CURLS:
        run_id = (
            failed["id"] if "resume" in line or "cancel" in line else (runs[-1] if runs else failed["id"])
        )
        code, body = await curl(stack, line, pipeline_id=config["id"], run_id=run_id)
        assert code == expected, f"{line}: {code} {body}"
        if "/run " in line:
            created = json.loads(body)
            assert created["status"] == "pending" and created["pipeline_id"] == config["id"]
            runs.append(created["id"])
            run = await wait_run(stack, created["id"])
            assert run["params"] == {"date": "2024-01-15"}
        if "resume" in line:
            resumed = await wait_run(stack, json.loads(body)["id"])
            assert resumed["status"] == "success" and resumed["parent_run_id"] == failed["id"]
        if "backfill" in line:
            ids = json.loads(body)
            assert len(ids) == 31 - 1  # 2024-01-15 already has a successful run
            first = (await stack.http.get(f"/api/runs/{ids[0]}")).json()
            assert first["params"] == {"date": "2024-01-01"}
            backfills = (await stack.http.get(f"/api/runs/{ids[-1]}")).json()
            assert backfills["status"] == "pending" and backfills["params"] == {"date": "2024-01-31"}
            backfill_id = backfills["trigger"].removeprefix("backfill:")
            cancel = await stack.http.post(f"/api/v1/backfills/{backfill_id}/cancel")
            assert cancel.status_code == 200, cancel.text
        if "scheduler" in line:
            assert json.loads(body) == []  # no pipeline here has a schedule
