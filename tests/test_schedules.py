"""Config schedules as Temporal Schedules, on a real Temporal server with short intervals: a
schedule fires, a paused one does not, deleting the config removes it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from temporalio.service import RPCError

from sluice.workflow_io import schedule_id_for
from tests.conftest import Stack

EVERY = """
name: ticker
init_message: {route: only, payload: {}}
schedule: {every: 2s, overlap: skip, paused: PAUSED}
routes:
  - {name: only, handler: "tests.handlers:echo_payload", stage: out}
"""


async def scheduled_runs(stack: Stack, pipeline_id: str) -> list[dict[str, Any]]:
    resp = await stack.http.get("/api/v1/executions", params={"config_id": pipeline_id, "limit": 200})
    return [e for e in resp.json()["items"] if e["trigger"].startswith("schedule:")]


async def status(stack: Stack, pipeline_id: str) -> dict[str, Any] | None:
    resp = await stack.http.get("/api/scheduler/status")
    assert resp.status_code == 200, resp.text
    return next((s for s in resp.json() if s["pipeline_id"] == pipeline_id), None)


async def test_a_schedule_fires_pauses_and_goes_with_its_config(stack: Stack) -> None:
    config = await stack.create_config(EVERY.replace("PAUSED", "false"))
    pid = config["id"]
    for _ in range(150):
        runs = await scheduled_runs(stack, pid)
        if any(r["status"] == "completed" for r in runs):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the schedule never fired")
    assert runs[0]["trigger"] == "schedule:every 2s"
    entry = await status(stack, pid)
    assert entry is not None and entry["enabled"] is True and entry["in_temporal"] is True
    assert entry["cron"] == "every 2s" and entry["pipeline_name"] == "ticker"
    assert entry["next_run"] is not None and entry["last_run"] is not None

    paused = await stack.http.post(f"/api/scheduler/{pid}/pause")
    assert paused.status_code == 200 and paused.json()["enabled"] is False
    await asyncio.sleep(1.0)  # a run started just before the pause may still be recorded
    before = len(await scheduled_runs(stack, pid))
    await asyncio.sleep(4.5)
    assert len(await scheduled_runs(stack, pid)) == before  # paused: nothing fired
    unpaused = await stack.http.post(f"/api/scheduler/{pid}/unpause")
    assert unpaused.status_code == 200 and unpaused.json()["enabled"] is True
    for _ in range(80):
        if len(await scheduled_runs(stack, pid)) > before:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the unpaused schedule never fired")

    assert (await stack.http.delete(f"/api/v1/configs/{pid}")).status_code == 204
    with pytest.raises(RPCError):
        await stack.temporal.get_schedule_handle(schedule_id_for(pid)).describe()
    assert await status(stack, pid) is None


async def test_a_schedule_paused_in_its_config_does_not_fire(stack: Stack) -> None:
    config = await stack.create_config(EVERY.replace("PAUSED", "true"))
    await asyncio.sleep(4.5)
    assert await scheduled_runs(stack, config["id"]) == []
    entry = await status(stack, config["id"])
    assert entry is not None and entry["enabled"] is False
    # Writing the config sets the schedule: unpaused in the YAML, it fires.
    resp = await stack.http.put(
        f"/api/v1/configs/{config['id']}",
        content=EVERY.replace("PAUSED", "false"),
        headers={"Content-Type": "application/yaml"},
    )
    assert resp.status_code == 200
    for _ in range(80):
        if await scheduled_runs(stack, config["id"]):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the schedule never fired after unpausing in the config")
    await stack.http.delete(f"/api/v1/configs/{config['id']}")


async def test_cron_schedules_and_bad_schedules(stack: Stack) -> None:
    config = await stack.create_config(
        EVERY.replace("{every: 2s, overlap: skip, paused: PAUSED}", '"0 6 * * *"')
    )
    entry = await status(stack, config["id"])
    assert entry is not None and entry["cron"] == "0 6 * * *" and entry["timezone"] == "UTC"
    assert entry["next_run"].endswith(("06:00:00Z", "06:00:00+00:00"))
    desc = await stack.temporal.get_schedule_handle(schedule_id_for(config["id"])).describe()
    calendar = desc.schedule.spec.calendars[0]  # Temporal stores a cron as a calendar spec
    assert [(r.start, r.end) for r in calendar.hour] == [(6, 6)]
    # Removing the schedule from the config removes it from Temporal.
    plain = EVERY.replace("schedule: {every: 2s, overlap: skip, paused: PAUSED}\n", "")
    resp = await stack.http.put(
        f"/api/v1/configs/{config['id']}", content=plain, headers={"Content-Type": "application/yaml"}
    )
    assert resp.status_code == 200
    assert await status(stack, config["id"]) is None
    with pytest.raises(RPCError):
        await stack.temporal.get_schedule_handle(schedule_id_for(config["id"])).describe()
    assert (await stack.http.post(f"/api/scheduler/{config['id']}/pause")).status_code == 409

    for schedule, path in [
        ('"61 * * *"', "schedule"),
        ("{every: 2s, cron: '@daily'}", "schedule"),
        ("{cron: '@daily', timezone: Mars/Olympus}", "schedule.timezone"),
        ("{every: 10ms}", "schedule.every"),
    ]:
        bad = EVERY.replace("{every: 2s, overlap: skip, paused: PAUSED}", schedule)
        resp = await stack.http.post(
            "/api/v1/configs", content=bad, headers={"Content-Type": "application/yaml"}
        )
        assert resp.status_code == 400, (schedule, resp.text)
        codes = [(i["code"], i["path"]) for i in resp.json()["issues"] if i["severity"] == "error"]
        assert ("E701", path) in codes, (schedule, codes)
