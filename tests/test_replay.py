"""Replay: each source, cross-pipeline, replay of a replay, detached counts, errors, lineage."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select
from temporalio import activity
from temporalio.api.enums.v1 import EventType

from sluice.activities import replay as replay_activities
from sluice.db.engine import create_engine, session_factory
from sluice.db.models import LineageRecord, ReplayLineageRecord
from sluice.ids import ClusteredIds
from sluice.services import replays
from sluice.services.lineage import lineage_rows
from sluice.workflow_io import (
    LIST_REPLAY_KEYS,
    PUBLISH_REPLAY_CHUNK,
    PUBLISH_REPLAY_KEYS,
    REPLAY_KEYS_SIGNAL,
    RUN_ROUTE,
    ReplaySpec,
)
from tests.conftest import Stack, StackFactory

PIPELINE = """
name: items
init_message: {route: load, payload: {count: 12}}
routes:
  - name: load
    handler: tests.handlers:fanout
    stage: raw
    next: [copy]
  - name: copy
    handler: tests.handlers:copy
    stage: copied
"""

OTHER = """
name: shouting
routes:
  - name: shout
    handler: tests.handlers:sync_upper
    stage: shouted
"""


async def parent_run(stack: Stack) -> dict[str, Any]:
    config = await stack.create_config(PIPELINE)
    done = await stack.wait((await stack.run(config["id"])).json()["id"])
    assert done["status"] == "completed"
    return done


async def replay(stack: Stack, parent: str, **body: Any) -> Any:
    return await stack.http.post(f"/api/v1/executions/{parent}/replay", json=body)


def sidecar(stack: Stack, execution_id: str, stage: str, name: str) -> dict[str, Any]:
    return json.loads((stack.storage_root / execution_id / stage / f"{name}.meta.json").read_text())


async def test_storage_replay_runs_downstream_without_rerunning_upstream(stack: Stack) -> None:
    parent = await parent_run(stack)
    resp = await replay(
        stack, parent["id"], replay_source="storage", from_stage="raw", to_route="copy", tag="r1"
    )
    assert resp.status_code == 200, resp.text
    child = resp.json()
    assert child["parent_execution_id"] == parent["id"] and child["replay_source"] == "storage"
    assert child["tag"] == "r1" and uuid.UUID(child["id"]).version == 7
    assert child["replay"]["objects_published"] == 12 and child["replay"]["objects_failed"] == 0
    done = await stack.wait(child["id"])
    assert done["status"] == "completed"
    copied = stack.objects(child["id"], "copied")
    assert [p.read_text() for p in copied] == [f"ITEM {i}" for i in range(12)]
    assert not (stack.storage_root / child["id"] / "raw").exists()
    routes = {
        r["route"]: r
        for r in (await stack.http.get(f"/api/v1/executions/{child['id']}/routes")).json()["routes"]
    }
    assert routes["load"]["status"] == "skipped" and routes["copy"]["messages_in"] == 12
    meta = sidecar(stack, child["id"], "copied", "item-00000.txt")
    assert meta["replay_batch_id"] == child["replay"]["replay_batch_id"]
    # By tag as well as by id.
    again = await replay(stack, "r1", replay_source="lineage", from_stage="raw", to_route="copy")
    assert again.status_code == 200, again.text


async def test_from_path_narrows_the_replay(stack: Stack) -> None:
    parent = await parent_run(stack)
    resp = await replay(
        stack, parent["id"], replay_source="storage", from_stage="raw", from_path="item-0000", to_route="copy"
    )
    done = await stack.wait(resp.json()["id"])
    assert len(stack.objects(done["id"], "copied")) == 10  # item-00000 .. item-00009


async def test_replay_of_a_replay_resolves_through_lineage(stack: Stack) -> None:
    parent = await parent_run(stack)
    first = (
        await replay(stack, parent["id"], replay_source="storage", from_stage="raw", to_route="copy")
    ).json()
    await stack.wait(first["id"])
    # The first replay wrote no `raw` objects of its own: storage refuses, lineage finds the parent's.
    refused = await replay(stack, first["id"], replay_source="storage", from_stage="raw", to_route="copy")
    assert refused.status_code == 400 and refused.json()["error_code"] == "STAGE_EMPTY"
    second = await replay(stack, first["id"], replay_source="lineage", from_stage="raw", to_route="copy")
    assert second.status_code == 200, second.text
    done = await stack.wait(second.json()["id"])
    assert done["parent_execution_id"] == first["id"] and done["replay_source"] == "lineage"
    assert len(stack.objects(done["id"], "copied")) == 12
    assert done["replay"]["objects_published"] == 12


async def test_manual_replay_publishes_exactly_the_named_keys(stack: Stack) -> None:
    parent = await parent_run(stack)
    keys = [f"{parent['id']}/raw/item-00003.txt", "item-00007.txt"]
    resp = await replay(
        stack,
        parent["id"],
        replay_source="manual",
        from_stage="raw",
        to_route="copy",
        metadata={"keys": keys},
    )
    assert resp.status_code == 200, resp.text
    done = await stack.wait(resp.json()["id"])
    assert [p.read_text() for p in stack.objects(done["id"], "copied")] == ["ITEM 3", "ITEM 7"]
    single = await replay(
        stack,
        parent["id"],
        replay_source="manual",
        from_stage="raw",
        to_route="copy",
        from_path="item-00001.txt",
    )
    done = await stack.wait(single.json()["id"])
    assert [p.read_text() for p in stack.objects(done["id"], "copied")] == ["ITEM 1"]
    outside = await replay(
        stack,
        parent["id"],
        replay_source="manual",
        from_stage="raw",
        to_route="copy",
        metadata={"keys": [f"{uuid.uuid4()}/raw/x.txt"]},
    )
    assert outside.status_code == 400 and outside.json()["error_code"] == "INVALID_KEYS"
    none = await replay(stack, parent["id"], replay_source="manual", from_stage="raw", to_route="copy")
    assert none.status_code == 400 and none.json()["error_code"] == "INVALID_KEYS"
    missing = await replay(
        stack, parent["id"], replay_source="manual", from_stage="raw", to_route="copy", from_path="nope.txt"
    )
    assert missing.status_code == 400 and missing.json()["error_code"] == "STAGE_EMPTY"


async def test_cross_pipeline_replay_uses_the_other_pipelines_routes(stack: Stack) -> None:
    parent = await parent_run(stack)
    other = await stack.create_config(OTHER)
    resp = await replay(
        stack,
        parent["id"],
        replay_source="storage",
        from_stage="raw",
        to_route="shout",
        config_id=other["id"],
    )
    assert resp.status_code == 200, resp.text
    done = await stack.wait(resp.json()["id"])
    assert done["config_id"] == other["id"] and done["pipeline"] == "shouting"
    assert [p.read_text() for p in stack.objects(done["id"], "shouted")][:2] == ["ITEM 0", "ITEM 1"]
    wrong = await replay(
        stack, parent["id"], replay_source="storage", from_stage="raw", to_route="copy", config_id=other["id"]
    )
    assert wrong.status_code == 400 and wrong.json()["error_code"] == "UNKNOWN_ROUTE"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"replay_source": "storage", "from_stage": "raw", "to_route": "nope"}, 400, "UNKNOWN_ROUTE"),
        ({"replay_source": "storage", "from_stage": "nope", "to_route": "copy"}, 400, "UNKNOWN_STAGE"),
        (
            {"replay_source": "storage", "from_stage": "raw", "from_path": "zzz", "to_route": "copy"},
            400,
            "STAGE_EMPTY",
        ),
        ({"replay_source": "storage", "from_stage": "../other", "to_route": "copy"}, 400, "INVALID_PATH"),
        ({"replay_source": "storage", "from_stage": "/etc", "to_route": "copy"}, 400, "INVALID_PATH"),
        (
            {"replay_source": "storage", "from_stage": "raw", "from_path": "../../x", "to_route": "copy"},
            400,
            "INVALID_PATH",
        ),
        ({"replay_source": "sideways", "from_stage": "raw", "to_route": "copy"}, 422, "VALIDATION_ERROR"),
        ({"replay_source": "storage", "from_stage": "", "to_route": "copy"}, 422, "VALIDATION_ERROR"),
        (
            {
                "replay_source": "storage",
                "from_stage": "raw",
                "to_route": "copy",
                "config_id": str(uuid.uuid4()),
            },
            404,
            "CONFIG_NOT_FOUND",
        ),
    ],
)
async def test_replay_errors(stack: Stack, body: dict[str, Any], status: int, code: str) -> None:
    parent = await parent_run(stack)
    resp = await replay(stack, parent["id"], **body)
    assert resp.status_code == status, resp.text
    assert resp.json()["error_code"] == code
    assert resp.json()["correlation_id"]


async def test_replay_unknown_parent_and_duplicate_tag(stack: Stack) -> None:
    missing = await replay(
        stack, str(uuid.uuid4()), replay_source="storage", from_stage="raw", to_route="copy"
    )
    assert missing.status_code == 404 and missing.json()["error_code"] == "EXECUTION_NOT_FOUND"
    parent = await parent_run(stack)
    ok = await replay(
        stack, parent["id"], replay_source="storage", from_stage="raw", to_route="copy", tag="dup"
    )
    assert ok.status_code == 200
    dup = await replay(
        stack, parent["id"], replay_source="storage", from_stage="raw", to_route="copy", tag="dup"
    )
    assert dup.status_code == 409


async def test_detached_replay_counts_and_messages(stack: Stack) -> None:
    parent = await parent_run(stack)
    resp = await stack.http.post(
        "/api/v1/replay", json={"from_execution_id": parent["id"], "from_stage": "raw", "to_route": "copy"}
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {
        "execution_id",
        "from_execution_id",
        "from_stage",
        "from_path",
        "to_route",
        "to_queue",
        "objects_found",
        "objects_published",
        "objects_failed",
        "status",
        "replay_batch_id",
        "errors",
    }
    assert (body["objects_found"], body["objects_published"], body["objects_failed"]) == (12, 12, 0)
    assert body["status"] == "publishing_complete" and body["errors"] is None
    assert body["to_queue"] == stack.settings.task_queue and body["from_path"] is None
    assert uuid.UUID(body["execution_id"]).version == 7 and uuid.UUID(body["replay_batch_id"]).version == 7
    done = await stack.wait(body["execution_id"])
    assert done["status"] == "completed" and len(stack.objects(done["id"], "copied")) == 12
    graph = (await stack.http.get(f"/api/v1/executions/{done['id']}/lineage")).json()
    published = [n for n in graph["nodes"] if n["route"] == "copy" and n["source_route"] is None]
    assert len(published) == 12, "one message per object; sidecars are never published"
    assert len({n["id"] for n in published}) == 12
    assert all(
        n["replay_batch_id"] == body["replay_batch_id"] and n["object_key"].startswith(parent["id"])
        for n in published
    )
    assert all(not n["object_key"].endswith(".meta.json") for n in published)


async def replay_with_a_dangling_link(stack: Stack) -> dict[str, Any]:
    """A detached replay of the 12 objects of a parent run and one link that cannot be read: the
    answer counts 13 found, 12 published and names the failed one."""
    parent = await parent_run(stack)
    broken = stack.storage_root / parent["id"] / "raw" / "item-99999.txt"
    broken.symlink_to(stack.storage_root / "nowhere")  # listed, but cannot be read
    resp = await stack.http.post(
        "/api/v1/replay", json={"from_execution_id": parent["id"], "from_stage": "raw", "to_route": "copy"}
    )
    body = resp.json()
    assert resp.status_code == 200, body
    assert (body["objects_found"], body["objects_published"], body["objects_failed"]) == (13, 12, 1)
    assert body["status"] == "partial_failure" and "item-99999.txt" in body["errors"][0]
    return body


async def test_detached_replay_partial_failure(stack: Stack) -> None:
    body = await replay_with_a_dangling_link(stack)
    assert (await stack.wait(body["execution_id"]))["status"] == "completed"


def activity_history(events: Any) -> list[tuple[str, str]]:
    """(event, activity type) of every activity scheduled or completed, in history order."""
    scheduled: dict[int, str] = {}
    seen: list[tuple[str, str]] = []
    for event in events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            scheduled[event.event_id] = name
            seen.append(("scheduled", name))
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            seen.append(
                ("completed", scheduled[event.activity_task_completed_event_attributes.scheduled_event_id])
            )
    return seen


async def assert_replayed_once_each(stack: Stack, done: dict[str, Any]) -> list[dict[str, Any]]:
    """The 12 readable objects reached the route once each, with one handled lineage row each."""
    assert done["status"] == "completed"
    assert done["replay"]["objects_published"] == 12
    assert [p.read_text() for p in stack.objects(done["id"], "copied")] == [f"ITEM {i}" for i in range(12)]
    graph = (await stack.http.get(f"/api/v1/executions/{done['id']}/lineage")).json()
    published = [n for n in graph["nodes"] if n["route"] == "copy" and n["source_route"] is None]
    assert len({n["id"] for n in published}) == 12
    return published


async def test_a_replay_route_derives_its_messages_from_the_published_keys(stack: Stack) -> None:
    body = await replay_with_a_dangling_link(stack)
    done = await stack.wait(body["execution_id"])
    published = await assert_replayed_once_each(stack, done)
    ids = ClusteredIds(body["replay_batch_id"])
    assert {n["id"] for n in published} == {ids.id(n["object_key"]) for n in published}
    engine = create_engine(stack.settings)
    try:
        async with session_factory(engine)() as session:
            stored = (
                await session.exec(select(LineageRecord).where(LineageRecord.execution_id == done["id"]))
            ).all()
            batches = (
                await session.exec(
                    select(ReplayLineageRecord).where(ReplayLineageRecord.execution_id == done["id"])
                )
            ).all()
            rows = await lineage_rows(session, done["id"])
    finally:
        await engine.dispose()
    # Stored: a row per output and one per handled batch, none per replayed message; read back,
    # the batches' rows are the 12 handled messages the graph showed.
    assert [r for r in stored if r.source_route is None] == []
    assert len(stored) == 12 and all(r.source_route == "copy" for r in stored)
    assert sorted(k for b in batches for k in b.object_keys) == sorted(n["object_key"] for n in published)
    messages = [r for r in rows if r.source_route is None]
    assert len(messages) == 12 and all(r.processed_at is not None for r in messages)
    assert {r.correlation_id for r in messages} == {n["id"] for n in published}
    outputs = {r.parent_correlation_id for r in rows if r.source_route == "copy"}
    assert outputs == {r.correlation_id for r in messages}
    assert all(
        r.payload == {"object_key": r.object_key, "stage": "raw", "path": r.object_key.rsplit("/", 1)[1]}
        for r in messages
    )

    # In the history an operator reads: one activity listed, checked and published the keys; the
    # route's batches then derived the messages (nothing was published per object).
    history = await stack.temporal.get_workflow_handle(f"sluice-exec-{done['id']}").fetch_history()
    names = [name for event, name in activity_history(history.events) if event == "scheduled"]
    assert names[0] == PUBLISH_REPLAY_KEYS and names.count(PUBLISH_REPLAY_KEYS) == 1
    assert PUBLISH_REPLAY_CHUNK not in names and LIST_REPLAY_KEYS not in names
    assert names.count(RUN_ROUTE) >= 1


async def test_a_replay_started_before_derived_messages_publishes_in_chunks(
    make_stack: StackFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Executions started by an earlier version (chunked publishing) still run to the end."""
    monkeypatch.setattr(
        replays,
        "ReplaySpec",
        lambda **kw: ReplaySpec(**{**kw, "derived": False, "streamed": False, "chunk_keys": 3}),
    )
    stack = await make_stack()
    # The counts of every chunk, added up, once all of them are published.
    body = await replay_with_a_dangling_link(stack)
    await assert_replayed_once_each(stack, await stack.wait(body["execution_id"]))

    # The 13 keys listed in pages of 3, published in chunks of 1, 2 and then the last 2 pages
    # (chunks double), and the route's first batch started before the last chunk was published.
    history = await stack.temporal.get_workflow_handle(f"sluice-exec-{body['execution_id']}").fetch_history()
    seen = activity_history(history.events)
    assert [name for event, name in seen if event == "scheduled"].count(PUBLISH_REPLAY_CHUNK) == 3
    first_batch = seen.index(("scheduled", RUN_ROUTE))
    last_chunk_done = max(i for i, item in enumerate(seen) if item == ("completed", PUBLISH_REPLAY_CHUNK))
    assert first_batch < last_chunk_done


STREAMED = 250  # objects: two full pages of 100 keys announced while publishing, then 50 more


async def test_a_streamed_replay_runs_its_route_while_publishing_and_a_retry_publishes_only_the_rest(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The publishing activity announces each full page of keys as it lands, so the route runs
    them while the listing goes on. Its first attempt fails after two pages: the retry keeps
    those pages (their batches may have run) and publishes only the keys they miss."""
    listed = replay_activities.candidate_pages

    async def interrupted(*args: Any, **kwargs: Any) -> Any:
        items = [item async for page in listed(*args, **kwargs) for item in page]
        if activity.info().attempt > 1:  # a listing later may differ, here in its order
            yield items[::-1]
            return
        for start in range(0, 230, 10):  # pages of a listing, smaller than the spill's pages
            yield items[start : start + 10]
        await asyncio.sleep(1.5)  # pages 0 and 1 have landed: the route starts on them
        raise RuntimeError("storage listing interrupted")

    monkeypatch.setattr(replay_activities, "candidate_pages", interrupted)
    # Batches of 10 keep pages at 100 keys (the smallest page).
    pipeline = PIPELINE.replace("count: 12", f"count: {STREAMED}") + "    batch_size: 10\n"
    config = await stack.create_config(pipeline)
    parent = await stack.wait((await stack.run(config["id"])).json()["id"])
    resp = await stack.http.post(
        "/api/v1/replay", json={"from_execution_id": parent["id"], "from_stage": "raw", "to_route": "copy"}
    )
    body = resp.json()
    assert resp.status_code == 200, body
    assert (body["objects_found"], body["objects_published"], body["objects_failed"]) == (STREAMED,) * 2 + (
        0,
    )
    done = await stack.wait(body["execution_id"])
    assert done["status"] == "completed" and done["replay"]["objects_published"] == STREAMED

    # Every object reached the route exactly once: one output each, one handled lineage row each.
    outputs = stack.objects(done["id"], "copied")
    assert sorted(p.read_text() for p in outputs) == sorted(f"ITEM {i}" for i in range(STREAMED))
    routes = {
        r["route"]: r
        for r in (await stack.http.get(f"/api/v1/executions/{done['id']}/routes")).json()["routes"]
    }
    assert (routes["copy"]["messages_in"], routes["copy"]["messages_processed"]) == (STREAMED, STREAMED)
    graph = (await stack.http.get(f"/api/v1/executions/{done['id']}/lineage")).json()
    published = [n for n in graph["nodes"] if n["route"] == "copy" and n["source_route"] is None]
    assert len(published) == STREAMED and len({n["object_key"] for n in published}) == STREAMED

    # In the history: the first attempt announced its two pages, the route started on them before
    # publishing completed, and the retried attempt completed it.
    history = await stack.temporal.get_workflow_handle(f"sluice-exec-{done['id']}").fetch_history()
    signals = [
        e
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
        and e.workflow_execution_signaled_event_attributes.signal_name == REPLAY_KEYS_SIGNAL
    ]
    assert signals  # one per growth of the pages landed in order (two pages may land as one)
    seen = activity_history(history.events)
    assert seen.index(("scheduled", RUN_ROUTE)) < seen.index(("completed", PUBLISH_REPLAY_KEYS))
    assert activity_attempts(history.events, PUBLISH_REPLAY_KEYS) == 2


def activity_attempts(events: Any, name: str) -> int:
    """The attempt that completed the (one) activity of type `name`."""
    scheduled = {
        e.event_id
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == name
    }
    (attempt,) = [
        e.activity_task_started_event_attributes.attempt
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        and e.activity_task_started_event_attributes.scheduled_event_id in scheduled
    ]
    return attempt


async def test_a_replay_started_before_streamed_publishing_publishes_before_its_route(
    make_stack: StackFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Executions started by an earlier version (keys published whole, then the route) still run."""
    monkeypatch.setattr(replays, "ReplaySpec", lambda **kw: ReplaySpec(**{**kw, "streamed": False}))
    stack = await make_stack()
    body = await replay_with_a_dangling_link(stack)
    await assert_replayed_once_each(stack, await stack.wait(body["execution_id"]))
    history = await stack.temporal.get_workflow_handle(f"sluice-exec-{body['execution_id']}").fetch_history()
    seen = activity_history(history.events)
    assert seen[:2] == [("scheduled", PUBLISH_REPLAY_KEYS), ("completed", PUBLISH_REPLAY_KEYS)]


async def test_detached_replay_errors(stack: Stack) -> None:
    parent = await parent_run(stack)
    unknown = await stack.http.post(
        "/api/v1/replay",
        json={"from_execution_id": str(uuid.uuid4()), "from_stage": "raw", "to_route": "copy"},
    )
    assert unknown.status_code == 404
    bad_route = await stack.http.post(
        "/api/v1/replay", json={"from_execution_id": parent["id"], "from_stage": "raw", "to_route": "x"}
    )
    assert bad_route.status_code == 400 and bad_route.json()["error_code"] == "UNKNOWN_ROUTE"
    escape = await stack.http.post(
        "/api/v1/replay",
        json={
            "from_execution_id": parent["id"],
            "from_stage": "raw",
            "from_path": "/abs",
            "to_route": "copy",
        },
    )
    assert escape.status_code == 400 and escape.json()["error_code"] == "INVALID_PATH"
    not_uuid = await stack.http.post(
        "/api/v1/replay", json={"from_execution_id": "x", "from_stage": "raw", "to_route": "copy"}
    )
    assert not_uuid.status_code == 422


async def test_lineage_answers_which_input_produced_an_output(stack: Stack) -> None:
    parent = await parent_run(stack)
    graph = (await stack.http.get(f"/api/v1/executions/{parent['id']}/lineage")).json()
    kinds = {(n["kind"], n["route"]) for n in graph["nodes"]}
    assert ("message", "copy") in kinds and ("object", "copy") in kinds
    # init -> load->copy message (12), and each message -> its copied object (12)
    assert len(graph["edges"]) == 24
    assert [n["route"] for n in graph["nodes"] if n["source_route"] is None] == ["load"]

    child = (
        await replay(stack, parent["id"], replay_source="storage", from_stage="raw", to_route="copy")
    ).json()
    await stack.wait(child["id"])
    key = f"{child['id']}/copied/item-00004.txt"
    chain = (
        await stack.http.get(f"/api/v1/executions/{child['id']}/lineage", params={"object_key": key})
    ).json()
    keys = [n["object_key"] for n in chain["nodes"]]
    assert keys[0] == key
    # ... back through the parent's raw object to the parent's first input, its init message.
    assert keys[-2] == f"{parent['id']}/raw/item-00004.txt"
    assert chain["nodes"][-2]["execution_id"] == parent["id"] and chain["nodes"][-2]["source_route"] == "load"
    root = chain["nodes"][-1]
    assert (root["execution_id"], root["route"], root["source_route"], root["object_key"]) == (
        parent["id"],
        "load",
        None,
        None,
    )
    assert len(chain["edges"]) == len(chain["nodes"]) - 1
    # Between the two: the replayed message that carried the parent's object into the child.
    carried = chain["nodes"][1]
    assert (carried["execution_id"], carried["route"], carried["source_route"]) == (child["id"], "copy", None)
    assert carried["object_key"] == keys[-2] and carried["replay_batch_id"]
    # Asked for that object in the child, the walk starts at the message that carried it.
    from_input = (
        await stack.http.get(f"/api/v1/executions/{child['id']}/lineage", params={"object_key": keys[-2]})
    ).json()
    assert from_input["nodes"] == chain["nodes"][1:] and from_input["edges"] == chain["edges"][1:]
    assert (await stack.http.get(f"/api/v1/executions/{uuid.uuid4()}/lineage")).status_code == 404


async def test_resuming_a_failed_replay_sends_only_the_messages_its_route_never_handled(
    stack: Stack, tmp_path: Path
) -> None:
    """A replay's messages are derived from its published keys, not stored: a resume rebuilds
    the ones its route never handled (and only those) from the same keys."""
    fail = ["item-00003.txt", "item-00007.txt"]
    params = {"fail": fail, "broken": str(tmp_path / "broken"), "tally": str(tmp_path / "tally")}
    config = await stack.create_config(
        f"""
name: picky-items
init_message: {{route: load, payload: {{count: 12}}}}
params: {json.dumps(params)}
routes:
  - {{name: load, handler: "tests.handlers:fanout", stage: raw}}
  - {{name: check, handler: "tests.handlers:picky", stage: checked, retry: {{max_attempts: 1}}}}
"""
    )
    parent = await stack.wait((await stack.run(config["id"])).json()["id"])
    assert parent["status"] == "completed"

    (tmp_path / "broken").write_text("yes")
    resp = await stack.http.post(
        "/api/v1/replay", json={"from_execution_id": parent["id"], "from_stage": "raw", "to_route": "check"}
    )
    assert resp.status_code == 200, resp.text
    failed = await stack.wait(resp.json()["execution_id"])
    assert failed["status"] == "failed"
    assert len(stack.objects(failed["id"], "checked")) == 10

    (tmp_path / "broken").unlink()  # the fix
    (tmp_path / "tally").unlink()

    # Without the published keys, the unhandled messages cannot be rebuilt: the resume says so.
    pages = (
        stack.storage_root
        / "_sluice"
        / failed["id"]
        / "spill"
        / f"replay-{resp.json()['replay_batch_id']}-published"
    )
    pages.rename(pages.with_name("moved-away"))
    resp = await stack.http.post(f"/api/v1/executions/{failed['id']}/resume")
    lost = await stack.wait(resp.json()["id"])
    assert lost["status"] == "failed" and "published keys" in lost["error"], lost
    pages.with_name("moved-away").rename(pages)

    resp = await stack.http.post(f"/api/v1/executions/{failed['id']}/resume")
    assert resp.status_code in (200, 201, 202), resp.text
    resumed = await stack.wait(resp.json()["id"])
    assert resumed["status"] == "completed", resumed
    assert resumed["resume"]["messages_pending"] == {"check": 2}
    assert sorted((tmp_path / "tally").read_text().splitlines()) == [f"check {name}" for name in fail]
    assert sorted(p.name for p in stack.objects(resumed["id"], "checked")) == [
        f"item-{i:05d}.txt" for i in range(12)
    ]
