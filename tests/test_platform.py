"""Seed 002's platform endpoints over HTTP: calendar, dashboard, search, system info, purge (and
`sluice purge`)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from sluice.db.engine import create_engine, session_factory
from sluice.db.models import ExecutionRecord
from tests.conftest import REPO, Stack

PIPELINE = """
name: {name}
description: {description}
init_message: {{route: load, payload: {{count: 2}}}}
routes:
  - {{name: load, handler: "tests.handlers:fanout", stage: raw_docs, next: [copy]}}
  - {{name: copy, handler: "tests.handlers:copy", stage: copied}}
"""


async def create(stack: Stack, name: str, description: str = "a pipeline") -> dict[str, Any]:
    return await stack.create_config(PIPELINE.format(name=name, description=description))


async def insert_runs(
    stack: Stack, config: dict[str, Any], runs: list[tuple[str, datetime]], **extra: Any
) -> list[str]:
    """Execution records as if they had run at those times (no workflow needed to count them)."""
    engine = create_engine(stack.settings)
    ids = []
    try:
        async with session_factory(engine)() as session:
            for status, when in runs:
                execution_id = str(uuid.uuid4())
                ids.append(execution_id)
                session.add(
                    ExecutionRecord(
                        id=execution_id,
                        config_id=config["id"],
                        config_version=1,
                        config_yaml=config["yaml"],
                        config_hash=config["config_hash"],
                        pipeline=config["name"],
                        namespace=config["namespace"],
                        layer=config["layer"],
                        status=status,
                        workflow_id=f"sluice-exec-{execution_id}",
                        task_queue=stack.settings.task_queue,
                        created_at=when,
                        started_at=when,
                        completed_at=None if status == "running" else when + timedelta(seconds=5),
                        **extra,
                    )
                )
            await session.commit()
    finally:
        await engine.dispose()
    return ids


def ago(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


async def test_calendar(stack: Stack) -> None:
    config = await create(stack, "cal")
    await insert_runs(
        stack,
        config,
        [("completed", ago(0)), ("failed", ago(0)), ("interrupted", ago(0)), ("cancelled", ago(0))]
        + [("completed", ago(2))] * 3
        + [("completed", ago(100)), ("failed", ago(400))],
    )
    await insert_runs(stack, config, [("completed", ago(0))], trigger="dry-run")  # never counted
    today, two_days = str(ago(0).date()), str(ago(2).date())
    days = (await stack.http.get("/api/runs/calendar")).json()
    assert days == [
        {"date": two_days, "success": 3, "failed": 0, "total": 3},
        {"date": today, "success": 1, "failed": 2, "total": 4},
    ]
    year = (await stack.http.get("/api/runs/calendar", params={"days": 365})).json()
    assert [d["date"] for d in year] == [str(ago(100).date()), two_days, today]
    for bad in (0, 366, "x"):
        assert (await stack.http.get("/api/runs/calendar", params={"days": bad})).status_code == 422


async def test_dashboard(stack: Stack) -> None:
    good = await create(stack, "steady")
    bad = await create(stack, "broken-etl")
    await insert_runs(stack, good, [("completed", ago(1))] * 3 + [("failed", ago(2))])
    await insert_runs(stack, bad, [("failed", ago(0.5)), ("interrupted", ago(3)), ("failed", ago(10))])
    resp = await stack.http.get("/api/dashboard")
    assert resp.status_code == 200, resp.text
    board = resp.json()
    assert set(board) == {"pipelines", "recent_runs", "trends", "top_failing"}
    pipelines = {p["name"]: p for p in board["pipelines"]}
    assert pipelines["steady"]["success_rate_7d"] == 75.0 and pipelines["steady"]["runs_7d"] == 4
    assert pipelines["steady"]["last_run_status"] == "success"
    assert (
        pipelines["broken-etl"]["success_rate_7d"] == 0.0
        and pipelines["broken-etl"]["last_run_status"] == "failed"
    )
    assert board["top_failing"] == [
        {"pipeline_id": bad["id"], "name": "broken-etl", "fail_count": 2},
        {"pipeline_id": good["id"], "name": "steady", "fail_count": 1},
    ]
    assert len(board["trends"]) == 7 and board["trends"][-1]["date"] == str(ago(0).date())
    assert sum(d["total"] for d in board["trends"]) == 6  # the 10-day-old run is outside
    recent = board["recent_runs"]
    assert len(recent) == 7 and recent[0]["pipeline_id"] == bad["id"]  # newest first
    assert [r["started_at"] for r in recent] == sorted((r["started_at"] for r in recent), reverse=True)


async def test_search(stack: Stack) -> None:
    users = await create(stack, "Users-Sync", "copies the USERS table")
    await create(stack, "orders", "nothing to see")
    run = (await stack.run(users["id"], tag="users-nightly")).json()
    await stack.wait(run["id"])
    hits = (await stack.http.get("/api/search", params={"q": "users"})).json()
    assert {(h["type"], h["name"]) for h in hits} == {
        ("pipeline", "Users-Sync"),
        ("execution", "users-nightly"),
    }
    stage = (await stack.http.get("/api/search", params={"q": "RAW_DOC"})).json()
    assert [(h["type"], h["name"]) for h in stage] == [("stage", "raw_docs"), ("stage", "raw_docs")]
    routes = (await stack.http.get("/api/search", params={"q": "cop"})).json()
    assert {h["type"] for h in routes} == {"route", "stage", "pipeline"}  # copy, copied, "copies the USERS"
    assert len((await stack.http.get("/api/search", params={"q": "o", "limit": 2})).json()) == 2
    assert (await stack.http.get("/api/search")).status_code == 422
    assert (await stack.http.get("/api/search", params={"q": "x", "limit": 101})).status_code == 422
    assert (await stack.http.get("/api/search", params={"q": "100%_"})).json() == []


async def test_system_info(stack: Stack) -> None:
    config = await create(stack, "info")
    await insert_runs(stack, config, [("running", ago(0))])
    info = (await stack.http.get("/api/system/info")).json()
    assert info["version"] and info["db_size"] > 0 and info["db_size_mb"].endswith(" MB")
    assert (info["pipelines"], info["active_runs"], info["max_concurrent_runs"]) == (1, 1, None)
    assert info["temporal"]["reachable"] is True
    main = [w for w in info["workers"] if w["task_queue"] == stack.settings.task_queue]
    assert {w["kind"] for w in main} == {"workflow", "activity"} and all(w["pollers"] for w in main)
    assert info["storage"]["backend"] == "file" and info["database"]["backend"] == "sqlite"


async def test_purge_deletes_exactly_what_it_reports(stack: Stack) -> None:
    config = await create(stack, "purged")
    ids = []
    for _ in range(3):
        ids.append((await stack.run(config["id"])).json()["id"])
    for execution_id in ids:
        assert (await stack.wait(execution_id))["status"] == "completed"
    old_alone, old_parent, fresh = ids
    child = await stack.http.post(
        "/api/v1/replay", json={"from_execution_id": old_parent, "from_stage": "raw_docs", "to_route": "copy"}
    )
    child_id = child.json()["execution_id"]
    await stack.wait(child_id)
    running = (await insert_runs(stack, config, [("running", ago(60))]))[0]
    engine = create_engine(stack.settings)
    try:
        async with engine.begin() as conn:
            for execution_id in (old_alone, old_parent):
                await conn.execute(
                    text("UPDATE executions SET created_at = :t WHERE id = :i"),
                    {"t": ago(40), "i": execution_id},
                )
    finally:
        await engine.dispose()

    resp = await stack.http.post("/api/system/purge", json={"days": 30})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["deleted"], body["days"], body["skipped_active"], body["kept_as_ancestors"]) == (1, 30, 1, 1)
    assert body["objects_deleted"] == 4 and body["kept_ids"] == [old_parent] and "replay" in body["note"]
    assert (await stack.http.get(f"/api/v1/executions/{old_alone}")).status_code == 404
    assert not (stack.storage_root / old_alone).exists()
    engine = create_engine(stack.settings)
    try:
        async with engine.connect() as conn:
            for table in ("execution_logs", "message_lineage", "route_runs"):
                left = await conn.execute(
                    text(f"SELECT count(*) FROM {table} WHERE execution_id = :i"), {"i": old_alone}
                )
                assert left.scalar() == 0, table
    finally:
        await engine.dispose()
    again = (await stack.http.post("/api/system/purge", json={"days": 30})).json()
    assert again["deleted"] == 0  # safe to run again
    # (reading the fake `running` record reconciles it with Temporal: it becomes interrupted)
    for kept in (old_parent, fresh, child_id, running):
        assert (await stack.http.get(f"/api/v1/executions/{kept}")).status_code == 200
    assert stack.objects(old_parent, "raw_docs")
    assert (await stack.http.post("/api/system/purge", json={"days": 0})).status_code == 422
    assert (await stack.http.post("/api/system/purge", json={"days": 30, "extra": 1})).status_code == 422

    # Once the replay is old too, it goes with its lineage, its batches' rows included, and
    # its parent is no longer kept for it.
    engine = create_engine(stack.settings)
    try:

        async def rows(table: str) -> int:
            async with engine.connect() as conn:
                query = text(f"SELECT count(*) FROM {table} WHERE execution_id = :i")
                return int((await conn.execute(query, {"i": child_id})).scalar() or 0)

        assert await rows("replay_lineage") > 0 and await rows("message_lineage") > 0
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE executions SET created_at = :t WHERE id = :i"), {"t": ago(40), "i": child_id}
            )
        body = (await stack.http.post("/api/system/purge", json={"days": 30})).json()
        # the parent, the replay, and the run read back as interrupted above (created 60 days ago)
        assert body["deleted"] == 3 and body["kept_ids"] == []
        assert (await stack.http.get(f"/api/v1/executions/{child_id}")).status_code == 404
        assert await rows("replay_lineage") == 0 and await rows("message_lineage") == 0
    finally:
        await engine.dispose()


async def test_sluice_purge_cli(stack: Stack) -> None:
    from sluice.runtime.devstack import child_env

    config = await create(stack, "cli-purged")
    old = await insert_runs(stack, config, [("completed", ago(10)), ("failed", ago(9))])
    env = {**child_env(stack.settings), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "sluice", "purge", "--days", "7", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["deleted"] == 2
    for execution_id in old:
        assert (await stack.http.get(f"/api/v1/executions/{execution_id}")).status_code == 404
    bad = subprocess.run(
        [sys.executable, "-m", "sluice", "purge", "--days", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "--days" in bad.stderr


async def test_lineage_across_pipelines(stack: Stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    a = await create(stack, "producer")
    b = await stack.create_config(
        """
name: consumer
routes:
  - {name: ingest, handler: "tests.handlers:copy", stage: ingested}
"""
    )
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# a")
    c = await stack.create_config(
        f"""
name: reader
init_message: {{route: read, payload: {{source: "{docs}"}}}}
routes:
  - {{name: read, handler: read_files, stage: files}}
"""
    )
    run = (await stack.run(a["id"])).json()
    await stack.wait(run["id"])
    replay = await stack.http.post(
        f"/api/v1/executions/{run['id']}/replay",
        json={
            "replay_source": "storage",
            "from_stage": "raw_docs",
            "to_route": "ingest",
            "config_id": b["id"],
        },
    )
    assert replay.status_code == 200, replay.text
    graph = (await stack.http.get("/api/lineage")).json()
    nodes = {n["id"]: n for n in graph["nodes"]}
    edges = {(e["from"], e["to"], e["pipeline_id"]) for e in graph["edges"]}
    ida, idb, idc = a["id"], b["id"], c["id"]
    assert nodes[f"route:{ida}:load"] == {
        "id": f"route:{ida}:load",
        "type": "route",
        "name": "load",
        "pipeline_id": ida,
    }
    assert nodes[f"stage:{ida}:raw_docs"]["type"] == "stage"
    assert {
        (f"route:{ida}:load", f"stage:{ida}:raw_docs", ida),
        (f"stage:{ida}:raw_docs", f"route:{ida}:copy", ida),
        (f"route:{ida}:copy", f"stage:{ida}:copied", ida),
        (f"route:{idb}:ingest", f"stage:{idb}:ingested", idb),
        (f"stage:{ida}:raw_docs", f"route:{idb}:ingest", idb),  # the cross-pipeline replay
        (f"source:{docs}", f"route:{idc}:read", idc),
    } <= edges
    assert nodes[f"source:{docs}"] == {
        "id": f"source:{docs}",
        "type": "folder",
        "name": str(docs),
        "pipeline_id": None,
    }
