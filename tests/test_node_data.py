"""Seeing what a node wrote, over HTTP against a real Temporal server: previews, profiles with
drift, and row counts taken from tabular outputs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import Stack


def tables(fmt: str, rows: int = 10, parts: int = 2, variant: int = 1) -> str:
    return f"""
name: tables
init_message: {{route: write, payload: {{}}}}
params: {{format: {fmt}, rows: {rows}, parts: {parts}, variant: {variant}}}
routes:
  - {{name: write, handler: "tests.handlers:write_table", stage: tables, next: [blobs]}}
  - {{name: blobs, handler: "tests.handlers:read_key", stage: blobs}}
  - {{name: quiet, handler: noop}}
"""


async def run(stack: Stack, config_id: str) -> dict[str, Any]:
    resp = await stack.http.post(f"/api/pipelines/{config_id}/run", json={})
    assert resp.status_code == 202, resp.text
    run_id = resp.json()["id"]
    for _ in range(600):
        body = (await stack.http.get(f"/api/runs/{run_id}")).json()
        if body["status"] not in ("pending", "running"):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError("run did not finish")


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl", "json"])
async def test_preview_each_format(stack: Stack, fmt: str) -> None:
    config = await stack.create_config(tables(fmt))
    done = await run(stack, config["id"])
    assert done["status"] == "success"
    write = next(n for n in done["node_runs"] if n["node_id"] == "write")
    assert write["row_count"] == 20  # counted from the tabular outputs: the handler reports none

    resp = await stack.http.get(f"/api/runs/{done['id']}/nodes/write/preview")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["columns"] == ["id", "name", "score"] and len(body["rows"]) == 20
    assert [r["id"] for r in body["rows"]] == list(range(20))
    assert body["rows"][0]["name"] is None
    if fmt == "csv":
        assert body["rows"][1]["name"] == "name 1\nsecond line"
    limited = (
        await stack.http.get(f"/api/runs/{done['id']}/nodes/write/preview", params={"limit": 3})
    ).json()
    assert len(limited["rows"]) == 3
    v1 = await stack.http.get(f"/api/v1/executions/{done['id']}/routes/write/preview", params={"limit": 12})
    assert v1.status_code == 200 and len(v1.json()["rows"]) == 12


async def test_preview_errors(stack: Stack) -> None:
    config = await stack.create_config(tables("csv"))
    done = await run(stack, config["id"])
    base = f"/api/runs/{done['id']}/nodes"
    for node, code in [
        ("blobs", "NODE_OUTPUT_NOT_TABULAR"),
        ("quiet", "NODE_OUTPUT_EMPTY"),
        ("nope", "NODE_NOT_FOUND"),
    ]:
        resp = await stack.http.get(f"{base}/{node}/preview")
        assert resp.status_code == 404 and resp.json()["error_code"] == code, resp.text
        assert resp.json()["detail"]
    assert (await stack.http.get(f"{base}/write/preview", params={"limit": 501})).status_code == 422
    assert (await stack.http.get(f"/api/runs/{'0' * 36}/nodes/write/preview")).status_code == 404


async def test_profile_and_drift(stack: Stack) -> None:
    config = await stack.create_config(tables("parquet", rows=50, parts=2))
    first = await run(stack, config["id"])
    resp = await stack.http.get(f"/api/runs/{first['id']}/nodes/write/profile")
    assert resp.status_code == 200, resp.text
    profile = resp.json()
    assert (profile["row_count"], profile["column_count"]) == (100, 3)
    columns = {c["name"]: c for c in profile["columns"]}
    assert columns["id"]["type"] == "int64" and (columns["id"]["min"], columns["id"]["max"]) == (0, 99)
    assert columns["id"]["unique_count"] == 100 and columns["id"]["unique_pct"] == 100.0
    assert columns["name"]["null_count"] == 25 and columns["name"]["null_pct"] == 25.0
    assert columns["score"]["mean"] == pytest.approx(sum(i / 2 for i in range(100)) / 100)
    assert len(columns["name"]["sample_values"]) == 5 and None not in columns["name"]["sample_values"]
    assert profile["drift"] == [] and profile["profiling_ms"] >= 0
    again = (await stack.http.get(f"/api/runs/{first['id']}/nodes/write/profile")).json()
    assert again["profiling_ms"] == profile["profiling_ms"]  # cached per run and node

    changed = tables("parquet", rows=50, parts=2, variant=2)
    await stack.http.put(
        f"/api/v1/configs/{config['id']}", content=changed, headers={"Content-Type": "application/yaml"}
    )
    second = await run(stack, config["id"])
    drift = (await stack.http.get(f"/api/runs/{second['id']}/nodes/write/profile")).json()
    assert drift["compared_with_run_id"] == first["id"]
    assert sorted((d["column"], d["change"]) for d in drift["drift"]) == [
        ("city", "column_added"),
        ("id", "type_changed"),
        ("score", "column_removed"),
    ]
    typed = next(d for d in drift["drift"] if d["change"] == "type_changed")
    assert (typed["previous"], typed["current"]) == ("int64", "string")
