"""Run, read, cancel: seed 000's shapes and status codes, against a real Temporal server."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import Stack, StackFactory, workflow_runs

SEED_FIELDS = {
    "id",
    "config_id",
    "status",
    "started_at",
    "completed_at",
    "parent_execution_id",
    "replay_source",
    "tag",
}


def two_routes(count: int = 3, **copy_opts: object) -> str:
    extra = "".join(f"\n    {k}: {json.dumps(v)}" for k, v in copy_opts.items())
    return f"""
name: fan
init_message:
  route: load
  payload: {{count: {count}}}
routes:
  - name: load
    handler: tests.handlers:fanout
    stage: raw
    next: [copy]
  - name: copy
    handler: tests.handlers:copy
    stage: copied{extra}
"""


def single(handler: str, **opts: object) -> str:
    extra = "".join(f"\n    {k}: {json.dumps(v)}" for k, v in opts.items())
    return f"""
name: single
init_message:
  route: only
  payload: {{from_yaml: 1, keep: yes}}
routes:
  - name: only
    handler: {handler}
    stage: out{extra}
"""


async def test_run_to_completion_with_seed_shape(stack: Stack) -> None:
    config = await stack.create_config(two_routes(3))
    resp = await stack.run(config["id"])
    assert resp.status_code == 200, resp.text
    started = resp.json()
    assert SEED_FIELDS <= set(started)
    execution_id = uuid.UUID(started["id"])
    assert execution_id.version == 7
    assert started["config_id"] == config["id"] and started["status"] == "running"
    assert started["parent_execution_id"] is None and started["replay_source"] is None
    assert started["temporal_ui_url"].endswith(f"/workflows/sluice-exec-{execution_id}")

    done = await stack.wait(started["id"])
    assert done["status"] == "completed" and done["completed_at"] >= done["started_at"]
    assert done["objects_written"] == 6 and done["messages_processed"] == 4
    copied = stack.objects(started["id"], "copied")
    assert [p.read_text() for p in copied] == ["ITEM 0", "ITEM 1", "ITEM 2"]
    sidecar = json.loads(copied[0].with_name(copied[0].name + ".meta.json").read_text())
    assert sidecar["route"] == "copy" and sidecar["stage"] == "copied" and sidecar["size"] == 6
    assert sidecar["execution_id"] == started["id"] and len(sidecar["sha256"]) == 64
    assert sidecar["config_hash"] and sidecar["correlation_id"] and sidecar["parent_correlation_id"]

    routes = (await stack.http.get(f"/api/v1/executions/{started['id']}/routes")).json()
    by_name = {r["route"]: r for r in routes["routes"]}
    assert by_name["load"]["messages_out"] == 3 and by_name["load"]["objects_written"] == 3
    assert by_name["copy"]["messages_in"] == 3 and by_name["copy"]["status"] == "completed"


async def test_tag_is_unique_and_resolves(stack: Stack) -> None:
    config = await stack.create_config(two_routes(1))
    first = await stack.run(config["id"], tag="nightly-1")
    assert first.status_code == 200 and first.json()["tag"] == "nightly-1"
    dup = await stack.run(config["id"], tag="nightly-1")
    assert dup.status_code == 409
    assert dup.json()["error_code"] == "TAG_EXISTS" and "nightly-1" in dup.json()["detail"]
    by_tag = await stack.http.get("/api/v1/executions/nightly-1")
    assert by_tag.status_code == 200 and by_tag.json()["id"] == first.json()["id"]
    assert (await stack.run(config["id"], tag=str(uuid.uuid4()))).status_code == 400
    await stack.wait(first.json()["id"])


async def test_init_payload_overrides_are_merged(stack: Stack) -> None:
    config = await stack.create_config(single("tests.handlers:echo_payload"))
    resp = await stack.run(config["id"], {"keep": "overridden", "added": [1, 2]})
    done = await stack.wait(resp.json()["id"])
    assert done["status"] == "completed"
    payload = json.loads((stack.storage_root / done["id"] / "out" / "payload.json").read_text())
    assert payload == {"from_yaml": 1, "keep": "overridden", "added": [1, 2]}
    embedded = await stack.run(config["id"], {"init_payload_overrides": {"keep": "embedded"}})
    done = await stack.wait(embedded.json()["id"])
    assert (
        json.loads((stack.storage_root / done["id"] / "out" / "payload.json").read_text())["keep"]
        == "embedded"
    )


async def test_skip_init_message_starts_idle(stack: Stack) -> None:
    config = await stack.create_config(two_routes(2))
    resp = await stack.run(config["id"], skip_init_message="true")
    done = await stack.wait(resp.json()["id"])
    assert done["status"] == "completed" and done["objects_written"] == 0
    routes = (await stack.http.get(f"/api/v1/executions/{done['id']}/routes")).json()["routes"]
    assert {r["status"] for r in routes} == {"skipped"}
    assert not (stack.storage_root / done["id"]).exists()


async def test_run_errors(stack: Stack) -> None:
    missing = await stack.run(str(uuid.uuid4()))
    assert missing.status_code == 404
    assert set(missing.json()) >= {"detail", "error_code", "correlation_id", "timestamp"}
    assert missing.json()["error_code"] == "CONFIG_NOT_FOUND"
    assert (await stack.run("not-a-uuid")).status_code == 422
    config = await stack.create_config(two_routes(1))
    assert (await stack.run(config["id"], [1, 2])).status_code == 422
    assert (
        await stack.http.post(f"/api/v1/configs/{config['id']}/run?skip_init_message=perhaps")
    ).status_code == 422
    assert (await stack.http.get(f"/api/v1/executions/{uuid.uuid4()}")).status_code == 404
    assert (await stack.http.get("/api/v1/executions/no-such-tag")).status_code == 404


async def test_run_of_a_config_that_no_longer_validates(stack: Stack) -> None:
    """A config stored by an older deployment: what the API can check (syntax, allow-list, the
    standard library) is refused with 400 before anything starts; a handler module that is gone
    from the workers fails its route there (the API never imports handler modules)."""
    config = await stack.create_config(two_routes(1))
    engine = create_async_engine(stack.settings.resolved_database_url)

    async def store(yaml_text: str) -> None:
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE pipeline_configs SET yaml = :y WHERE id = :id"),
                {"y": yaml_text, "id": config["id"]},
            )

    await store(two_routes(1).replace("tests.handlers:copy", "os:popen"))
    resp = await stack.run(config["id"])
    assert resp.status_code == 400
    assert resp.json()["issues"][0]["code"] == "E305" and resp.json()["is_valid"] is False

    await store(two_routes(1).replace("tests.handlers:copy", "gone.module:copy"))
    await engine.dispose()
    resp = await stack.run(config["id"])
    assert resp.status_code == 200
    done = await stack.wait(resp.json()["id"])
    assert done["status"] == "failed" and "'gone.module' cannot be imported" in done["error"]
    routes = (await stack.http.get(f"/api/v1/executions/{done['id']}/routes")).json()["routes"]
    assert routes[1]["retries"] == 0  # an import error is not retried


async def test_temporal_unreachable_is_503(make_stack: StackFactory) -> None:
    # An API pointed at a port where no Temporal listens; no injected client.
    stack = await make_stack(worker=False)
    import uvicorn

    from sluice.api.app import create_app  # a second app sharing the database, with a dead Temporal address

    settings = stack.settings.model_copy(update={"temporal_address": "127.0.0.1:1"})
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        import httpx

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            config = (
                await http.post(
                    "/api/v1/configs", content=two_routes(1), headers={"Content-Type": "application/yaml"}
                )
            ).json()
            resp = await http.post(f"/api/v1/configs/{config['id']}/run", params={"tag": "t503"})
            assert resp.status_code == 503
            assert resp.json()["error_code"] == "TEMPORAL_UNAVAILABLE"
            # Nothing was left behind: the tag is free and no record exists.
            assert (await http.get("/api/v1/executions/t503")).status_code == 404
            ready = await http.get("/ready")
            assert ready.status_code == 503 and ready.json()["database"] == "ok"
            # A running execution's progress lives in its workflow: no invented zeros without Temporal.
            running = (await stack.run(config["id"])).json()
            routes = await http.get(f"/api/v1/executions/{running['id']}/routes")
            assert routes.status_code == 503 and routes.json()["error_code"] == "TEMPORAL_UNAVAILABLE"
    finally:
        server.should_exit = True
        await task


async def test_route_failure_after_retries_fails_execution(stack: Stack) -> None:
    config = await stack.create_config(
        single(
            "tests.handlers:always_fail", retry={"max_attempts": 3, "backoff": "50ms", "max_backoff": "100ms"}
        )
    )
    done = await stack.wait((await stack.run(config["id"])).json()["id"])
    assert done["status"] == "failed"
    assert "only" in done["error"] and "this route always fails" in done["error"]
    route = (await stack.http.get(f"/api/v1/executions/{done['id']}/routes")).json()["routes"][0]
    assert route["status"] == "failed" and route["retries"] == 2 and "always fails" in route["error"]


async def test_non_retryable_error_fails_at_once(stack: Stack) -> None:
    config = await stack.create_config(
        single("tests.handlers:fatal", retry={"max_attempts": 5, "backoff": "1s"})
    )
    done = await stack.wait((await stack.run(config["id"])).json()["id"], timeout=20)
    assert done["status"] == "failed" and "retrying will not help" in done["error"]
    route = (await stack.http.get(f"/api/v1/executions/{done['id']}/routes")).json()["routes"][0]
    assert route["retries"] == 0


async def test_transient_failure_is_retried(stack: Stack) -> None:
    config = await stack.create_config(
        single("tests.handlers:flaky", retry={"max_attempts": 3, "backoff": "50ms"}, params={"succeed_on": 2})
    )
    done = await stack.wait((await stack.run(config["id"])).json()["id"])
    assert done["status"] == "completed"
    assert (stack.storage_root / done["id"] / "out" / "ok.txt").read_text() == "succeeded on attempt 2"
    route = (await stack.http.get(f"/api/v1/executions/{done['id']}/routes")).json()["routes"][0]
    assert route["retries"] == 1 and route["status"] == "completed"


async def test_retried_activity_does_not_duplicate_objects(stack: Stack) -> None:
    config = await stack.create_config(
        single("tests.handlers:crash_once", retry={"max_attempts": 2, "backoff": "50ms"})
    )
    done = await stack.wait((await stack.run(config["id"])).json()["id"])
    assert done["status"] == "completed"
    files = sorted(p.name for p in (stack.storage_root / done["id"] / "out").iterdir())
    assert files == ["once.txt", "once.txt.meta.json"]


async def test_cancel_reaches_a_handler_that_never_heartbeats(stack: Stack, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    config = await stack.create_config(single("tests.handlers:slow", params={"marker": str(marker)}))
    started = (await stack.run(config["id"])).json()
    for _ in range(200):
        if marker.exists():
            break
        await asyncio.sleep(0.05)
    assert marker.exists(), "handler never started"
    live = (await stack.http.get(f"/api/v1/executions/{started['id']}/routes")).json()
    assert live["status"] == "running" and live["routes"][0]["status"] == "running"
    assert live["routes"][0]["in_flight"] == 1

    resp = await stack.http.post(f"/api/v1/executions/{started['id']}/cancel")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "cancelled" and body["completed_at"]
    route = (await stack.http.get(f"/api/v1/executions/{started['id']}/routes")).json()["routes"][0]
    assert route["status"] == "cancelled"
    again = await stack.http.post(f"/api/v1/executions/{started['id']}/cancel")
    assert again.status_code == 409 and again.json()["error_code"] == "EXECUTION_TERMINAL"


async def test_terminated_workflow_shows_interrupted(stack: Stack) -> None:
    config = await stack.create_config(single("tests.handlers:slow"))
    started = (await stack.run(config["id"])).json()
    await stack.temporal.get_workflow_handle(f"sluice-exec-{started['id']}").terminate(
        "operator pressed the button"
    )
    body = (await stack.http.get(f"/api/v1/executions/{started['id']}")).json()
    assert body["status"] == "interrupted" and "terminated" in body["error"]
    assert body["completed_at"] is not None


async def test_big_fanout_spills_and_continues_as_new(make_stack: StackFactory) -> None:
    stack = await make_stack(activities_per_run=20)
    config = await stack.create_config(two_routes(250, batch_size=5, concurrency=8))
    started = (await stack.run(config["id"])).json()
    done = await stack.wait(started["id"], timeout=120)
    assert done["status"] == "completed"
    assert len(stack.objects(started["id"], "copied")) == 250
    routes = {
        r["route"]: r
        for r in (await stack.http.get(f"/api/v1/executions/{done['id']}/routes")).json()["routes"]
    }
    assert routes["copy"]["messages_in"] == 250 and routes["copy"]["messages_processed"] == 250
    # More than one workflow run: the execution continued as new.
    assert len(await workflow_runs(stack.temporal, f"sluice-exec-{started['id']}")) > 1


async def test_sync_handler_runs_in_thread_and_reports_rows(stack: Stack) -> None:
    yaml_text = two_routes(2).replace("tests.handlers:copy", "tests.handlers:sync_upper")
    config = await stack.create_config(yaml_text)
    done = await stack.wait((await stack.run(config["id"])).json()["id"])
    # 2 rows reported by the sync handler, 2 counted from `load`'s text outputs (it reports none).
    assert done["status"] == "completed" and done["rows_written"] == 4
    routes = (await stack.http.get(f"/api/v1/executions/{done['id']}/routes")).json()["routes"]
    assert [r["rows_written"] for r in routes] == [2, 2]
    assert [p.read_text() for p in stack.objects(done["id"], "copied")] == ["ITEM 0", "ITEM 1"]


async def test_sync_handler_sends_more_messages_than_travel_inline(stack: Stack) -> None:
    """A plain function sending 1,200 messages: its pages and lineage rows are written while it
    runs (from its thread), and each message arrives once."""
    config = await stack.create_config(
        """
name: sends
init_message: {route: fan, payload: {count: 1200}}
routes:
  - {name: fan, handler: "tests.handlers:sync_send_many", next: [sink]}
  - {name: sink, handler: noop}
"""
    )
    done = await stack.wait((await stack.run(config["id"])).json()["id"], timeout=120)
    assert done["status"] == "completed", done
    routes = {
        r["route"]: r
        for r in (await stack.http.get(f"/api/v1/executions/{done['id']}/routes")).json()["routes"]
    }
    assert (routes["fan"]["messages_out"], routes["sink"]["messages_in"]) == (1200, 1200)
    assert routes["sink"]["messages_processed"] == 1200
    logs = (await stack.http.get(f"/api/v1/executions/{done['id']}/logs")).json()["logs"]
    assert "sent 1200 messages from fan" in [entry["message"] for entry in logs]


async def test_execution_keeps_its_config_snapshot(stack: Stack) -> None:
    original = two_routes(1)
    config = await stack.create_config(original)
    done = await stack.wait((await stack.run(config["id"])).json()["id"])
    changed = original.replace("name: fan", "name: fan\ndescription: edited")
    await stack.http.put(f"/api/v1/configs/{config['id']}", json={"yaml": changed})
    snap = (await stack.http.get(f"/api/v1/executions/{done['id']}/config")).json()
    assert snap["yaml"] == original and snap["config_version"] == 1
    await stack.http.delete(f"/api/v1/configs/{config['id']}")
    again = await stack.http.get(f"/api/v1/executions/{done['id']}/config")
    assert again.status_code == 200 and again.json()["yaml"] == original
    assert (await stack.http.get(f"/api/v1/executions/{done['id']}")).json()["config_version"] == 1


async def test_route_concurrency_is_respected(stack: Stack) -> None:
    from tests import handlers

    handlers.reset_probe()
    yaml_text = two_routes(12).replace("tests.handlers:copy", "tests.handlers:concurrency_probe")
    yaml_text = yaml_text.replace("stage: copied", "stage: copied\n    concurrency: 3\n    batch_size: 1")
    config = await stack.create_config(yaml_text)
    done = await stack.wait((await stack.run(config["id"])).json()["id"])
    assert done["status"] == "completed"
    seen = [int(p.read_text()) for p in stack.objects(done["id"], "copied")]
    assert max(seen) == 3, seen


async def test_route_timeout_fails_the_route(stack: Stack) -> None:
    config = await stack.create_config(
        single("tests.handlers:slow", timeout="1s", retry={"max_attempts": 2, "backoff": "50ms"})
    )
    done = await stack.wait((await stack.run(config["id"])).json()["id"], timeout=30)
    assert done["status"] == "failed" and "timeout" in done["error"].lower()
    route = (await stack.http.get(f"/api/v1/executions/{done['id']}/routes")).json()["routes"][0]
    assert route["retries"] == 1


async def test_route_on_its_own_task_queue(make_stack: StackFactory) -> None:
    queue = f"special-{uuid.uuid4().hex[:6]}"
    stack = await make_stack(worker_task_queues=queue)
    config = await stack.create_config(two_routes(2, task_queue=queue))
    done = await stack.wait((await stack.run(config["id"])).json()["id"])
    assert done["status"] == "completed" and len(stack.objects(done["id"], "copied")) == 2
    detached = await stack.http.post(
        "/api/v1/replay", json={"from_execution_id": done["id"], "from_stage": "raw", "to_route": "copy"}
    )
    assert detached.json()["to_queue"] == queue


async def test_run_on_postgres(make_stack: StackFactory) -> None:
    stack = await make_stack(database="postgres")
    config = await stack.create_config(two_routes(4))
    done = await stack.wait((await stack.run(config["id"], tag="pg-run")).json()["id"])
    assert done["status"] == "completed" and done["objects_written"] == 8
    routes = (await stack.http.get("/api/v1/executions/pg-run/routes")).json()["routes"]
    assert [r["messages_processed"] for r in routes] == [1, 4]
    graph = (await stack.http.get(f"/api/v1/executions/{done['id']}/lineage")).json()
    assert len(graph["edges"]) == 8  # init -> 4 load messages, each -> its copied object
    roots = [n for n in graph["nodes"] if n["source_route"] is None]
    assert [(r["route"], r["kind"]) for r in roots] == [("load", "message")]
    logs = (await stack.http.get(f"/api/v1/executions/{done['id']}/logs")).json()["logs"]
    assert logs[0]["event"] == "execution.started" and logs[-1]["event"] == "execution.finished"
    assert (await stack.run(config["id"], tag="pg-run")).status_code == 409

    # A replay's batches write each derived message's lineage row, handled, on PostgreSQL too.
    replay = await stack.http.post(
        "/api/v1/replay", json={"from_execution_id": done["id"], "from_stage": "raw", "to_route": "copy"}
    )
    assert replay.status_code == 200 and replay.json()["objects_published"] == 4, replay.text
    replayed = await stack.wait(replay.json()["execution_id"])
    assert replayed["status"] == "completed" and replayed["objects_written"] == 4
    graph = (await stack.http.get(f"/api/v1/executions/{replayed['id']}/lineage")).json()
    messages = [n for n in graph["nodes"] if n["source_route"] is None]
    assert len(messages) == 4 and {n["replay_batch_id"] for n in messages} == {
        replay.json()["replay_batch_id"]
    }


async def test_an_execution_costs_temporal_only_its_route_activities(stack: Stack) -> None:
    """The final record is a local activity and nothing upserts search attributes mid-run: per
    execution, Temporal schedules the route batches and nothing else."""
    config = await stack.create_config(two_routes(3))
    done = await stack.wait((await stack.run(config["id"])).json()["id"])
    assert done["status"] == "completed"
    history = await stack.temporal.get_workflow_handle(f"sluice-exec-{done['id']}").fetch_history()
    kinds = [event.WhichOneof("attributes") for event in history.events]
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert scheduled and set(scheduled) == {"sluice.run_route"}
    markers = [
        e.marker_recorded_event_attributes.marker_name
        for e in history.events
        if e.HasField("marker_recorded_event_attributes")
    ]
    assert markers == ["core_local_activity"]  # the final record, written once
    assert "upsert_workflow_search_attributes_event_attributes" not in kinds
