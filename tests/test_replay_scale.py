"""A 10,000-object replay: every object processed exactly once, history kept small by batching,
spilled message pages and continue-as-new."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType

from tests.conftest import StackFactory, workflow_runs

OBJECTS = 10_000

PIPELINE = """
name: bulk
init_message: {{route: load, payload: {{count: {count}}}}}
routes:
  - name: load
    handler: tests.handlers:fanout
    stage: raw
    timeout: 10m
  - name: tally
    handler: tests.handlers:tally
    batch_size: 25
    concurrency: 16
    params: {{tally: "{tally}"}}
"""


@pytest.mark.slow
async def test_replay_of_ten_thousand_objects(make_stack: StackFactory, tmp_path: Path) -> None:
    # Production heartbeat timeout: a busy CI machine must not time out the 10,000-object fan-out.
    stack = await make_stack(activities_per_run=150, heartbeat_timeout="10s")
    tally = tmp_path / "tally.txt"
    config = await stack.create_config(PIPELINE.format(count=OBJECTS, tally=tally))
    parent = await stack.wait((await stack.run(config["id"])).json()["id"], timeout=600)
    assert parent["status"] == "completed" and parent["objects_written"] == OBJECTS

    resp = await stack.http.post(
        "/api/v1/replay", json={"from_execution_id": parent["id"], "from_stage": "raw", "to_route": "tally"}
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["objects_found"], body["objects_published"], body["objects_failed"]) == (OBJECTS, OBJECTS, 0)
    done = await stack.wait(body["execution_id"], timeout=900)
    assert done["status"] == "completed", done

    lines = tally.read_text().splitlines()
    assert len(lines) == OBJECTS, "each object handled exactly once"
    assert len(set(lines)) == OBJECTS
    assert set(lines) == {f"{parent['id']}/raw/item-{i:05d}.txt" for i in range(OBJECTS)}
    routes = {
        r["route"]: r
        for r in (await stack.http.get(f"/api/v1/executions/{done['id']}/routes")).json()["routes"]
    }
    assert routes["tally"]["messages_in"] == routes["tally"]["messages_processed"] == OBJECTS

    # Several runs (continue-as-new), each far below Temporal's limits: events and payload sizes.
    workflow_id = f"sluice-exec-{body['execution_id']}"
    runs = await workflow_runs(stack.temporal, workflow_id)
    assert len(runs) >= 3
    for run_id in runs:
        history = await stack.temporal.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        assert len(history.events) < 10_240
        for event in history.events:
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                size = sum(
                    len(p.data) for p in event.activity_task_completed_event_attributes.result.payloads
                )
                assert size < 256 * 1024
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                size = sum(len(p.data) for p in event.activity_task_scheduled_event_attributes.input.payloads)
                assert size < 256 * 1024
