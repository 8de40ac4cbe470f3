"""Bodies only in declared content types and sizes, CORS only when configured, bounded numbers,
and a bounded schemathesis run over the OpenAPI document: no 500, no answer that breaks it."""

from __future__ import annotations

import asyncio
import sysconfig
from pathlib import Path

from sluice.api.schemas import MAX_ID, MAX_INT
from tests.conftest import Stack, StackFactory

PIPELINE = """
name: hygiene
init_message: {route: a, payload: {count: 2}}
routes:
  - {name: a, handler: 'tests.handlers:fanout', stage: raw}
"""


async def test_bodies_need_a_declared_content_type(stack: Stack) -> None:
    """A cross-site form or `text/plain` fetch (a CORS "simple request") never reaches a handler."""
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""):
        headers = {"Content-Type": ctype} if ctype else {}
        created = await stack.http.post("/api/v1/configs", content=PIPELINE, headers=headers)
        assert created.status_code == 415, (ctype, created.text)
        assert created.json()["error_code"] == "UNSUPPORTED_MEDIA_TYPE"
    config = await stack.create_config(PIPELINE)
    run = await stack.http.post(
        f"/api/v1/configs/{config['id']}/run", content='{"count": 1}', headers={"Content-Type": "text/plain"}
    )
    assert run.status_code == 415
    assert (await stack.http.get("/api/v1/executions")).json()["total"] == 0  # nothing started
    # The declared types work, and a POST without a body needs no type.
    for ctype in ("application/yaml", "application/x-yaml"):
        ok = await stack.http.post(
            "/api/v1/configs/validate", content=PIPELINE, headers={"Content-Type": ctype}
        )
        assert ok.status_code == 200 and ok.json()["is_valid"]
    assert (await stack.http.post(f"/api/v1/configs/{config['id']}/run")).status_code == 200


async def test_bodies_are_bounded(stack: Stack) -> None:
    huge = "x" * (1_048_576 + 1)
    announced = await stack.http.post(
        "/api/v1/configs", content=huge, headers={"Content-Type": "application/yaml"}
    )
    assert announced.status_code == 413 and announced.json()["error_code"] == "PAYLOAD_TOO_LARGE"

    async def chunks():  # no Content-Length: the size is counted as it streams
        for _ in range(20):
            yield b"y" * 100_000

    streamed = await stack.http.post(
        "/api/v1/configs", content=chunks(), headers={"Content-Type": "application/yaml"}
    )
    assert streamed.status_code == 413


async def test_numbers_are_bounded_never_a_500(stack: Stack) -> None:
    config = await stack.create_config(PIPELINE)
    run = (await stack.http.post(f"/api/v1/configs/{config['id']}/run")).json()
    huge = str(2**70)
    for path, params in (
        ("/api/v1/configs", {"offset": huge}),
        ("/api/v1/executions", {"offset": huge}),
        (f"/api/v1/executions/{run['id']}/logs", {"after_id": huge}),
        (f"/api/v1/configs/{config['id']}/versions/{huge}", {}),
        ("/api/v1/runs", {"offset": huge}),
        ("/api/v1/runs", {"limit": huge}),
    ):
        resp = await stack.http.get(path, params=params)
        assert resp.status_code in (400, 422), (path, params, resp.status_code, resp.text)
        assert resp.json()["error_code"] in ("VALIDATION_ERROR", "INVALID_ARGUMENT")
    at_limit = await stack.http.get(f"/api/v1/executions/{run['id']}/logs", params={"after_id": MAX_ID})
    assert at_limit.status_code == 200 and at_limit.json()["logs"] == []
    assert (await stack.http.get("/api/v1/executions", params={"offset": MAX_INT})).json()["items"] == []


async def test_cors_is_off_unless_origins_are_listed(make_stack: StackFactory) -> None:
    preflight = {
        "Origin": "https://evil.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    closed = await make_stack(worker=False)
    resp = await closed.http.options("/api/v1/configs", headers=preflight)
    assert "access-control-allow-origin" not in resp.headers
    get = await closed.http.get("/api/v1/configs", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in get.headers

    opened = await make_stack(worker=False, cors_origins="https://ui.example")
    allowed = await opened.http.options(
        "/api/v1/configs", headers={**preflight, "Origin": "https://ui.example"}
    )
    assert allowed.headers["access-control-allow-origin"] == "https://ui.example"
    other = await opened.http.options("/api/v1/configs", headers=preflight)
    assert other.headers.get("access-control-allow-origin") != "https://evil.example"


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    stack: Stack, tmp_path: Path
) -> None:
    """Bounded (75 s at most): every operation, positive and negative data, with real ids."""
    config = await stack.create_config(PIPELINE)
    run = (await stack.http.post(f"/api/v1/configs/{config['id']}/run", json={"count": 2})).json()
    await stack.wait(run["id"])
    (tmp_path / "schemathesis.toml").write_text(
        f"""
[parameters]
config_id = "{config["id"]}"
execution_id = "{run["id"]}"
run_id = "{run["id"]}"
version = 1
"""
    )
    checks = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"
    proc = await asyncio.create_subprocess_exec(
        str(Path(sysconfig.get_path("scripts")) / "schemathesis"),
        "--config-file",
        str(tmp_path / "schemathesis.toml"),
        "run",
        f"{stack.base_url}/openapi.json",
        "--checks",
        checks,
        "--max-examples",
        "15",
        "--phases",
        "examples,coverage,fuzzing",
        "--generation-database",
        "none",
        "--seed",
        "20261130",
        "--no-color",
        "--workers",
        "2",
        "--request-timeout",
        "30",
        "--max-time",
        "75",
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 300)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-6000:]
    cases = text.split("Test cases:")[-1]
    assert "generated" in cases and "passed" in cases and "failure" not in cases


async def test_docs_work_offline(stack: Stack) -> None:
    """/docs and /redoc reference only assets the API serves itself (no CDN)."""
    import re

    for page in ("/docs", "/redoc"):
        resp = await stack.http.get(page)
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
        refs = re.findall(r"""(?:src|href)=["']([^"']+)["']""", resp.text)
        refs += re.findall(r"""url:\s*['"]([^'"]+)['"]""", resp.text)
        assert refs, page
        assert not [r for r in refs if "://" in r or r.startswith("//")], (page, refs)
        for ref in refs:
            asset = await stack.http.get(ref)
            assert asset.status_code == 200 and asset.content, (page, ref)
    assert (await stack.http.get("/docs/oauth2-redirect")).status_code == 200
