"""The ids of the messages routes send: the same on every attempt of a batch, and sorted with
their execution, so an execution's lineage rows sit side by side in lineage's index."""

from __future__ import annotations

import uuid
from pathlib import Path

from temporalio.testing import ActivityEnvironment

from sluice.activities.deps import ActivityDeps
from sluice.activities.routes import RouteActivities
from sluice.db.migrate import upgrade_database
from sluice.ids import ClusteredIds, derived_id, uuid7
from sluice.messages import Message, MessageMetadata
from sluice.pipeline_config import RouteConfig
from sluice.settings import Settings
from sluice.workflow_io import MessageBatch, RouteTask
from tests.conftest import Stack


async def test_messages_a_route_sends_get_ids_that_sort_with_their_execution(stack: Stack) -> None:
    config = await stack.create_config(
        """
name: sorted-ids
init_message: {route: load, payload: {count: 4}}
routes:
  - {name: load, handler: "tests.handlers:fanout", stage: raw, next: [sink]}
  - {name: sink, handler: noop}
"""
    )
    run = await stack.wait((await stack.run(config["id"])).json()["id"])
    assert run["status"] == "completed"
    graph = (await stack.http.get(f"/api/v1/executions/{run['id']}/lineage")).json()
    sent = [n for n in graph["nodes"] if n["source_route"] == "load"]
    assert len(sent) == 4 and {n["route"] for n in sent} == {"sink"}
    stamp = uuid.UUID(run["id"]).int >> 80
    for node in sent:
        parsed = uuid.UUID(node["id"])
        assert parsed.version == 7 and parsed.int >> 80 == stamp, node["id"]


async def test_a_batch_scheduled_before_sorted_ids_keeps_deriving_the_ids_it_did(tmp_path: Path) -> None:
    """A batch's retry runs the input its first attempt ran: one scheduled before sorted ids
    (no `clustered_ids`) must send the uuid5 ids its first attempt sent."""
    settings = Settings(data_dir=tmp_path, read_roots=str(tmp_path))
    await upgrade_database(settings)
    deps = ActivityDeps.from_settings(settings)
    try:
        execution_id = str(uuid7())
        init = Message(
            payload={"count": 2},
            metadata=MessageMetadata(
                execution_id=execution_id, correlation_id=derived_id(execution_id, "init")
            ),
        )
        route = RouteConfig(name="load", handler="tests.handlers:fanout", stage="raw", next=["sink"])
        sent: dict[bool, list[str]] = {}
        for clustered in (False, True):
            task = RouteTask(
                execution_id=execution_id,
                route=route,
                config_hash="h",
                batch=MessageBatch(messages=[init]),
                clustered_ids=clustered,
            )
            result = await ActivityEnvironment().run(RouteActivities(deps).run_route, task)
            [output] = result.outputs
            sent[clustered] = [m.metadata.correlation_id for m in output.messages or []]
        keys = [f"{execution_id}/raw/item-{i:05d}.txt" for i in range(2)]
        parent = init.metadata.correlation_id
        assert sent[False] == [derived_id(parent, key, "sink") for key in keys]
        assert sent[True] == [ClusteredIds(execution_id).id(parent, key, "sink") for key in keys]
    finally:
        await deps.close()
