"""Backfills over HTTP against a real Temporal server: one run per date in date order, durable
across a worker kill, only the missing dates again, cancelled as a whole, bad ranges refused."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
from pathlib import Path
from typing import Any

from tests.conftest import Stack, StackFactory, start_worker, wait_until_polling

DATED = """
name: dated
init_message: {route: only, payload: {day: "${param.date}"}}
params: {sleep: 0}
routes:
  - {name: only, handler: "tests.handlers:dated_sleep", stage: out}
"""


async def backfill(stack: Stack, pipeline_id: str, **body: Any) -> tuple[str, list[str]]:
    resp = await stack.http.post(f"/api/pipelines/{pipeline_id}/backfill", json=body)
    assert resp.status_code == 202, resp.text
    assert resp.headers["Location"] == f"/api/v1/backfills/{resp.headers['Sluice-Backfill-Id']}"
    return resp.headers["Sluice-Backfill-Id"], resp.json()


async def wait_backfill(stack: Stack, backfill_id: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        resp = await stack.http.get(f"/api/v1/backfills/{backfill_id}")
        assert resp.status_code == 200, resp.text
        if resp.json()["status"] != "running":
            return resp.json()
        assert asyncio.get_running_loop().time() < deadline, resp.text
        await asyncio.sleep(0.2)


async def test_one_run_per_date_in_order_and_only_missing_again(stack: Stack) -> None:
    config = await stack.create_config(DATED)
    backfill_id, ids = await backfill(stack, config["id"], start_date="2024-01-30", end_date="2024-02-02")
    assert len(ids) == 4 and len(set(ids)) == 4
    done = await wait_backfill(stack, backfill_id)
    assert done["status"] == "completed" and done["counts"] == {"success": 4}
    assert [(d["date"], d["run_id"], d["status"]) for d in done["dates"]] == [
        (day, run_id, "success")
        for day, run_id in zip(["2024-01-30", "2024-01-31", "2024-02-01", "2024-02-02"], ids, strict=True)
    ]
    runs = [(await stack.http.get(f"/api/runs/{i}")).json() for i in ids]
    assert [r["params"] for r in runs] == [{"date": d["date"]} for d in done["dates"]]
    assert all(r["trigger"] == f"backfill:{backfill_id}" for r in runs)
    # max_parallel 1: each date starts after the one before has finished.
    for before, after in itertools.pairwise(runs):
        assert after["started_at"] >= before["finished_at"]
    seen = [json.loads((stack.storage_root / i / "out" / "seen.json").read_text()) for i in ids]
    assert [s["payload"]["day"] for s in seen] == [d["date"] for d in done["dates"]]

    _, again = await backfill(stack, config["id"], start_date="2024-01-30", end_date="2024-02-02")
    assert again == []  # every date already has a successful run
    wider_id, wider = await backfill(stack, config["id"], start_date="2024-02-01", end_date="2024-02-04")
    assert len(wider) == 2
    assert [d["date"] for d in (await wait_backfill(stack, wider_id))["dates"]] == [
        "2024-02-03",
        "2024-02-04",
    ]
    _, forced = await backfill(
        stack,
        config["id"],
        start_date="2024-01-30",
        end_date="2024-01-31",
        only_missing=False,
        max_parallel=2,
    )
    assert len(forced) == 2


async def test_bad_ranges_are_refused(stack: Stack) -> None:
    config = await stack.create_config(DATED)
    url = f"/api/pipelines/{config['id']}/backfill"
    cases = [
        ({"start_date": "2024-13-01", "end_date": "2024-12-31"}, "INVALID_DATE"),
        ({"start_date": "20240101", "end_date": "2024-01-02"}, "INVALID_DATE"),
        ({"start_date": 20240101, "end_date": "2024-01-02"}, "INVALID_DATE"),
        ({"start_date": "2024-02-01", "end_date": "2024-01-31"}, "INVALID_DATE_RANGE"),
        ({"start_date": "2023-01-01", "end_date": "2024-01-02"}, "BACKFILL_TOO_LONG"),
    ]
    for body, code in cases:
        resp = await stack.http.post(url, json=body)
        assert resp.status_code == 400 and resp.json()["error_code"] == code, (body, resp.text)
    year = await stack.http.post(
        url, json={"start_date": "2024-01-01", "end_date": "2024-12-31", "max_parallel": 0}
    )
    assert year.status_code == 422  # max_parallel 1-50; 366 days itself is allowed
    missing = await stack.http.post(
        "/api/pipelines/nope/backfill", json={"start_date": "2024-01-01", "end_date": "2024-01-01"}
    )
    assert missing.status_code == 404
    unknown = await stack.http.get("/api/v1/backfills/0190a0a0-0000-7000-8000-000000000000")
    assert unknown.status_code == 404 and unknown.json()["error_code"] == "BACKFILL_NOT_FOUND"


async def test_the_limit_can_be_raised(make_stack: StackFactory) -> None:
    stack = await make_stack(backfill_max_days=400, worker=False)
    config = await stack.create_config(DATED)
    resp = await stack.http.post(
        f"/api/pipelines/{config['id']}/backfill", json={"start_date": "2023-01-01", "end_date": "2024-01-02"}
    )
    assert resp.status_code == 202 and len(resp.json()) == 367
    cancelled = await stack.http.post(f"/api/v1/backfills/{resp.headers['Sluice-Backfill-Id']}/cancel")
    assert cancelled.status_code in (200, 202)


async def test_cancel_a_backfill_as_a_whole(stack: Stack) -> None:
    config = await stack.create_config(DATED.replace("sleep: 0", "sleep: 30"))
    backfill_id, ids = await backfill(stack, config["id"], start_date="2024-03-01", end_date="2024-03-04")
    for _ in range(200):
        first = (await stack.http.get(f"/api/runs/{ids[0]}")).json()
        if first["status"] == "running":
            break
        await asyncio.sleep(0.05)
    waiting = (await stack.http.get(f"/api/runs/{ids[2]}")).json()
    assert waiting["status"] == "pending" and waiting["params"] == {"date": "2024-03-03"}
    resp = await stack.http.post(f"/api/v1/backfills/{backfill_id}/cancel")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "cancelled" and body["counts"] == {"cancelled": 4}
    assert (await stack.http.get(f"/api/runs/{ids[0]}")).json()["status"] == "cancelled"
    assert (await stack.http.get(f"/api/runs/{ids[3]}")).json()["status"] == "cancelled"
    again = await stack.http.post(f"/api/v1/backfills/{backfill_id}/cancel")
    assert again.status_code == 409 and again.json()["status"] == "cancelled"


async def test_a_backfill_survives_its_worker_being_killed(make_stack: StackFactory, tmp_path: Path) -> None:
    stack = await make_stack(worker=False)
    config = await stack.create_config(DATED.replace("sleep: 0", "sleep: 1"))
    worker = start_worker(stack, tmp_path / "w1.log")
    try:
        await wait_until_polling([tmp_path / "w1.log"])
        backfill_id, ids = await backfill(stack, config["id"], start_date="2024-05-01", end_date="2024-05-03")
        for _ in range(300):
            if (await stack.http.get(f"/api/runs/{ids[1]}")).json()["status"] == "running":
                break
            await asyncio.sleep(0.05)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        worker = start_worker(stack, tmp_path / "w2.log")
        done = await wait_backfill(stack, backfill_id)
    finally:
        worker.kill()
        worker.wait()
    assert done["status"] == "completed" and done["counts"] == {"success": 3}
    for run_id in ids:
        assert len(stack.objects(run_id, "out")) == 1
