"""Config CRUD and validation over HTTP, on SQLite and on the machine's PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.conftest import Stack, StackFactory

PIPELINE = """
name: orders
namespace: shop
layer: silver
description: test pipeline
init_message:
  route: load
  payload: {count: 2}
routes:
  - name: load
    handler: tests.handlers:fanout
    stage: raw
    next: [copy]
  - name: copy
    handler: tests.handlers:copy
    stage: copied
"""


@pytest.fixture(params=["sqlite", "postgres"])
async def db_stack(request: pytest.FixtureRequest, make_stack: StackFactory) -> Stack:
    return await make_stack(database=request.param, worker=False)


async def test_create_get_list_update_delete(db_stack: Stack) -> None:
    http = db_stack.http
    created = await db_stack.create_config(PIPELINE)
    assert uuid.UUID(created["id"])
    assert (created["name"], created["namespace"], created["layer"], created["version"]) == (
        "orders",
        "shop",
        "silver",
        1,
    )

    got = await http.get(f"/api/v1/configs/{created['id']}")
    assert got.status_code == 200 and got.json()["yaml"] == PIPELINE

    second = (await http.post("/api/v1/configs", json={"yaml": PIPELINE.replace("orders", "refunds")})).json()
    listing = (await http.get("/api/v1/configs", params={"limit": 1})).json()
    assert listing["total"] == 2 and len(listing["items"]) == 1 and listing["limit"] == 1
    page2 = (await http.get("/api/v1/configs", params={"limit": 1, "offset": 1})).json()
    assert {listing["items"][0]["id"], page2["items"][0]["id"]} == {created["id"], second["id"]}
    assert (await http.get("/api/v1/configs", params={"name": "refunds"})).json()["total"] == 1

    updated_yaml = PIPELINE.replace("description: test pipeline", "description: v2")
    put = await http.put(
        f"/api/v1/configs/{created['id']}", content=updated_yaml, headers={"Content-Type": "application/yaml"}
    )
    assert put.status_code == 200, put.text
    assert put.json()["version"] == 2 and put.json()["description"] == "v2"
    versions = (await http.get(f"/api/v1/configs/{created['id']}/versions")).json()
    assert [v["version"] for v in versions] == [1, 2]
    assert versions[0]["yaml"] == PIPELINE
    v1 = await http.get(f"/api/v1/configs/{created['id']}/versions/1")
    assert v1.status_code == 200 and v1.json()["yaml"] == PIPELINE

    deleted = await http.delete(f"/api/v1/configs/{created['id']}")
    assert deleted.status_code == 204
    missing = await http.get(f"/api/v1/configs/{created['id']}")
    assert missing.status_code == 404
    body = missing.json()
    assert set(body) >= {"detail", "error_code", "correlation_id", "timestamp"}
    assert body["correlation_id"] == missing.headers["x-correlation-id"]


async def test_invalid_config_is_rejected_with_report(db_stack: Stack) -> None:
    bad = PIPELINE.replace("next: [copy]", "next: [cpy]")
    resp = await db_stack.http.post(
        "/api/v1/configs", content=bad, headers={"Content-Type": "application/yaml"}
    )
    assert resp.status_code == 400
    body = resp.json()
    assert body["is_valid"] is False and body["error_count"] == 1
    assert body["issues"][0]["code"] == "E201" and body["issues"][0]["path"] == "routes[0].next[0]"
    assert "copy" in body["issues"][0]["suggestion"]
    assert body["error_code"] == "CONFIG_INVALID" and body["detail"]
    assert (await db_stack.http.get("/api/v1/configs")).json()["total"] == 0

    created = await db_stack.create_config(PIPELINE)
    put = await db_stack.http.put(f"/api/v1/configs/{created['id']}", json={"yaml": bad})
    assert put.status_code == 400 and put.json()["issues"][0]["code"] == "E201"
    assert (await db_stack.http.get(f"/api/v1/configs/{created['id']}")).json()["version"] == 1


async def test_bad_requests_get_clear_errors(stack: Stack) -> None:
    http = stack.http
    assert (await http.get("/api/v1/configs/not-a-uuid")).status_code == 422
    assert (await http.get(f"/api/v1/configs/{uuid.uuid4()}")).status_code == 404
    wrong_type = await http.post("/api/v1/configs", content=b"name: x", headers={"Content-Type": "image/png"})
    assert wrong_type.status_code == 415 and wrong_type.json()["error_code"] == "UNSUPPORTED_MEDIA_TYPE"
    bad_json = await http.post("/api/v1/configs", content=b"{", headers={"Content-Type": "application/json"})
    assert bad_json.status_code == 400 and bad_json.json()["error_code"] == "INVALID_JSON"
    wrong_shape = await http.post("/api/v1/configs", json={"config": "x"})
    assert wrong_shape.status_code == 400 and "yaml" in wrong_shape.json()["detail"]
    bad_limit = await http.get("/api/v1/configs", params={"limit": 1000})
    assert bad_limit.status_code == 422 and isinstance(bad_limit.json()["detail"], list)
    assert (await http.put(f"/api/v1/configs/{uuid.uuid4()}", json={"yaml": PIPELINE})).status_code == 404
    assert (await http.delete(f"/api/v1/configs/{uuid.uuid4()}")).status_code == 404


async def test_validate_endpoint_returns_report(stack: Stack) -> None:
    ok = await stack.http.post(
        "/api/v1/configs/validate", content=PIPELINE, headers={"Content-Type": "application/yaml"}
    )
    assert ok.status_code == 200
    assert ok.json() == {"is_valid": True, "issues": [], "error_count": 0, "warning_count": 0}
    broken = await stack.http.post("/api/v1/configs/validate", json={"yaml": "name: [unclosed"})
    assert broken.status_code == 200
    report = broken.json()
    assert report["is_valid"] is False and report["issues"][0]["code"] == "E001"
    assert "line" in report["issues"][0]["message"]


async def test_one_name_one_pipeline(stack: Stack) -> None:
    """A pipeline's identity is (namespace, layer, name): a second create is 409 CONFIG_EXISTS
    naming the existing config; PUT adds a version; renaming onto another pipeline is refused."""
    first = await stack.create_config(PIPELINE)
    again = await stack.http.post(
        "/api/v1/configs", content=PIPELINE, headers={"Content-Type": "application/yaml"}
    )
    assert again.status_code == 409 and again.json()["error_code"] == "CONFIG_EXISTS"
    assert again.json()["config_id"] == first["id"] and first["id"] in again.json()["detail"]
    other_layer = PIPELINE.replace("layer: silver", "layer: gold")
    second = await stack.create_config(other_layer)  # same name, another layer: another pipeline
    renamed = await stack.http.put(
        f"/api/v1/configs/{second['id']}", content=PIPELINE, headers={"Content-Type": "application/yaml"}
    )
    assert renamed.status_code == 409 and renamed.json()["config_id"] == first["id"]
    versioned = await stack.http.put(
        f"/api/v1/configs/{first['id']}",
        content=PIPELINE + "\n# v2\n",
        headers={"Content-Type": "application/yaml"},
    )
    assert versioned.status_code == 200 and versioned.json()["version"] == 2
    listed = (await stack.http.get("/api/v1/configs", params={"name": first["name"]})).json()
    assert listed["total"] == 2


async def test_a_big_config_does_not_block_the_api(stack: Stack) -> None:
    """Validating a config near the 1 MiB limit happens off the event loop: /health answers meanwhile.

    Judged against the validation's own duration, not a fixed bound: the validating thread still
    competes for the GIL, so on a slow or noisy machine each answer takes longer, but an event
    loop blocked by the validation would answer its first /health only when the validation ends."""
    import time

    routes = "".join(
        f"  - {{name: r{i}, handler: noop, stage: s{i}, params: {{pad: '{'x' * 40}'}}}}\n"
        for i in range(9000)
    )
    big = f"name: big\nroutes:\n{routes}"
    assert 500_000 < len(big) < 1_048_576
    started = time.perf_counter()
    validating = asyncio.create_task(
        stack.http.post("/api/v1/configs/validate", content=big, headers={"Content-Type": "application/yaml"})
    )
    await asyncio.sleep(0.05)
    slowest, answers = 0.0, 0
    while not validating.done():
        t0 = time.perf_counter()
        assert (await stack.http.get("/health")).status_code == 200
        slowest = max(slowest, time.perf_counter() - t0)
        answers += 1
        await asyncio.sleep(0.05)
    assert (await validating).status_code == 200
    took = time.perf_counter() - started
    assert answers >= 2, f"/health answered {answers} time(s) during a {took:.2f}s validation"
    assert slowest < took / 2, f"/health took {slowest:.2f}s while a big config validated in {took:.2f}s"
