"""Who may call the API: tokens, OIDC JWTs, roles on every route (HTTP, SSE, WebSocket), and the
refusal to serve a network without authentication."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import websockets
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.exceptions import InvalidStatus

from sluice.api.auth import RedactQueryTokens
from sluice.auth.roles import Role
from sluice.auth.tokens import TokenService
from sluice.clock import as_utc
from sluice.db.engine import SyncTransactions, session_factory
from sluice.runtime.devstack import free_port
from tests.conftest import Stack, StackFactory
from tests.security import (
    ROLES,
    bearer,
    concrete,
    ec_key,
    needed_role,
    oidc_provider,
    operations,
    role_tokens,
    rsa_key,
)

PIPELINE = """
name: guarded
init_message: {route: a, payload: {count: 1}}
routes:
  - {name: a, handler: 'tests.handlers:fanout', stage: raw}
"""


@pytest.fixture
async def guarded(make_stack: StackFactory) -> tuple[Stack, dict[Role, str]]:
    stack = await make_stack(auth="token", handler_modules="tests")
    return stack, await role_tokens(stack)


def ws_url(stack: Stack, query: str = "") -> str:
    return stack.base_url.replace("http://", "ws://") + "/api/ws" + query


async def test_every_route_needs_a_credential_and_its_role(guarded: tuple[Stack, dict[Role, str]]) -> None:
    """Walks the app's own OpenAPI document, so a future endpoint cannot forget authentication."""
    stack, tokens = guarded
    http = stack.http
    openapi = (await http.get("/openapi.json")).json()
    ops = operations(openapi)
    assert len(ops) >= 25
    for method, template in ops:
        path = concrete(template)
        if path == "/health":
            assert (await http.request(method, path)).status_code == 200
            continue
        anonymous = await http.request(method, path)
        assert anonymous.status_code == 401, (method, template, anonymous.text)
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        body = anonymous.json()
        assert body["error_code"] == "UNAUTHENTICATED" and body["detail"] and body["timestamp"]
        bad = await http.request(method, path, headers=bearer("sluice_not-a-real-token"))
        assert bad.status_code == 401, (method, template)
        needed = needed_role(method, template)
        for role in ROLES:
            resp = await http.request(method, path, headers=bearer(tokens[role]))
            if role.allows(needed):
                assert resp.status_code not in (401, 403), (method, template, role, resp.text)
            else:
                assert resp.status_code == 403, (method, template, role, resp.text)
                assert resp.json()["error_code"] == "PERMISSION_DENIED"
        # Every operation documents both.
        responses = openapi["paths"][template][method.lower()]["responses"]
        assert {"401", "403"} <= set(responses), (method, template)
        if method in ("POST", "PUT"):
            assert {"413", "415", "422"} <= set(responses), (method, template)
    scheme = openapi["components"]["securitySchemes"]["bearer"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    assert (await http.get("/docs")).status_code == 200  # the Authorize button's page stays open


async def test_websocket_and_sse_need_the_same_credential(guarded: tuple[Stack, dict[Role, str]]) -> None:
    stack, tokens = guarded
    viewer = tokens[Role.viewer]
    with pytest.raises(InvalidStatus) as denied:
        async with websockets.connect(ws_url(stack)):
            pass
    assert denied.value.response.status_code == 401
    assert json.loads(denied.value.response.body)["error_code"] == "UNAUTHENTICATED"
    with pytest.raises(InvalidStatus) as bad:
        async with websockets.connect(ws_url(stack, "?token=sluice_wrong")):
            pass
    assert bad.value.response.status_code == 401
    # Header, query parameter (browsers), subprotocol pair (browsers).
    async with websockets.connect(ws_url(stack), additional_headers=bearer(viewer)) as ws:
        assert json.loads(await ws.recv())["type"] == "connected"
    async with websockets.connect(ws_url(stack, f"?token={viewer}")) as ws:
        assert json.loads(await ws.recv())["type"] == "connected"
    async with websockets.connect(ws_url(stack), subprotocols=["bearer", viewer]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "bearer"
        assert json.loads(await ws.recv())["type"] == "connected"

    # SSE: EventSource cannot set headers, so ?token= works on GET.
    config = await stack.http.post(
        "/api/v1/configs",
        content=PIPELINE,
        headers={"Content-Type": "application/yaml", **bearer(tokens[Role.editor])},
    )
    assert config.status_code == 201, config.text
    run = await stack.http.post(
        f"/api/v1/configs/{config.json()['id']}/run", headers=bearer(tokens[Role.operator])
    )
    assert run.status_code == 200, run.text
    url = f"/api/v1/executions/{run.json()['id']}/logs"
    assert (await stack.http.get(url, headers={"Accept": "text/event-stream"})).status_code == 401
    async with stack.http.stream(
        "GET", url, params={"token": viewer}, headers={"Accept": "text/event-stream"}
    ) as sse:
        assert sse.status_code == 200
        text = ""
        async for chunk in sse.aiter_text():
            text += chunk
            if "event: status" in text:
                break
    assert "event: log" in text
    # A query token is for reads only: never on a POST (a link must not be able to start work).
    forged = await stack.http.post(
        f"/api/v1/configs/{config.json()['id']}/run", params={"token": tokens[Role.admin]}
    )
    assert forged.status_code == 401


async def test_tokens_lifecycle_and_attribution(guarded: tuple[Stack, dict[Role, str]]) -> None:
    stack, tokens = guarded
    admin = bearer(tokens[Role.admin])
    created = await stack.http.post(
        "/api/v1/tokens", json={"name": "ci-bot", "role": "operator", "expires_in": "90d"}, headers=admin
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["token"].startswith("sluice_") and body["role"] == "operator" and body["expires_at"]
    listed = (await stack.http.get("/api/v1/tokens", headers=admin)).json()
    entry = next(t for t in listed if t["name"] == "ci-bot")
    assert "token" not in entry and "token_hash" not in entry and entry["created_by"].startswith("admin-")
    dup = await stack.http.post("/api/v1/tokens", json={"name": "ci-bot", "role": "viewer"}, headers=admin)
    assert dup.status_code == 409

    # Who did what is recorded: config versions by their editor, executions by their operator.
    editor = bearer(tokens[Role.editor])
    config = (
        await stack.http.post(
            "/api/v1/configs", content=PIPELINE, headers={"Content-Type": "application/yaml", **editor}
        )
    ).json()
    assert config["created_by"].startswith("editor-") and config["updated_by"] == config["created_by"]
    run = (await stack.http.post(f"/api/v1/configs/{config['id']}/run", headers=bearer(body["token"]))).json()
    assert run["triggered_by"] == "ci-bot"
    viewer = bearer(tokens[Role.viewer])
    assert (await stack.http.get(f"/api/v1/executions/{run['id']}", headers=viewer)).json()[
        "triggered_by"
    ] == "ci-bot"
    last_used = next(
        t for t in (await stack.http.get("/api/v1/tokens", headers=admin)).json() if t["name"] == "ci-bot"
    )
    assert last_used["last_used_at"] is not None

    revoked = await stack.http.delete("/api/v1/tokens/ci-bot", headers=admin)
    assert revoked.status_code == 204
    after = await stack.http.get(f"/api/v1/executions/{run['id']}", headers=bearer(body["token"]))
    assert after.status_code == 401
    assert (await stack.http.delete("/api/v1/tokens/nobody", headers=admin)).status_code == 404


async def test_a_token_stops_working_when_it_expires(guarded: tuple[Stack, dict[Role, str]]) -> None:
    stack, tokens = guarded
    created = await stack.http.post(
        "/api/v1/tokens",
        json={"name": "short-lived", "role": "viewer", "expires_in": "2s"},
        headers=bearer(tokens[Role.admin]),
    )
    assert created.status_code == 201, created.text
    short = bearer(created.json()["token"])
    assert (await stack.http.get("/api/v1/executions", headers=short)).status_code == 200
    await asyncio.sleep(2.2)
    refused = await stack.http.get("/api/v1/executions", headers=short)
    assert refused.status_code == 401 and refused.json()["error_code"] == "UNAUTHENTICATED", refused.text


async def test_token_checks_on_sqlite_and_postgresql(migrated_engine: AsyncEngine) -> None:
    """What every request under token auth runs, on both databases: a live token gives its
    principal and marks when it was used (once per TOUCH_EVERY), a revoked or expired one nothing."""
    transactions = SyncTransactions(migrated_engine)
    service = TokenService(session_factory(migrated_engine), transactions)
    try:
        _, token = await service.create("bot", Role.operator, expires_in=None, created_by="test")
        principal = await service.authenticate(token)
        assert principal is not None and (principal.name, principal.role) == ("bot", Role.operator)
        [listed] = await service.list()
        first_use = as_utc(listed.last_used_at)
        assert first_use is not None
        await service.authenticate(token)  # within TOUCH_EVERY: no second write
        assert as_utc((await service.list())[0].last_used_at) == first_use
        assert await service.authenticate(token + "x") is None
        assert await service.authenticate("not-a-sluice-token") is None
        await service.revoke("bot")
        assert await service.authenticate(token) is None
        _, brief = await service.create(
            "brief", Role.viewer, expires_in=timedelta(seconds=-1), created_by="test"
        )
        assert await service.authenticate(brief) is None
    finally:
        transactions.close()


async def test_token_cli_prints_the_token_last_and_it_works(guarded: tuple[Stack, dict[Role, str]]) -> None:
    stack, _ = guarded
    env = {**os.environ, "SLUICE_DATABASE_URL": stack.settings.resolved_database_url, "SLUICE_AUTH": "token"}
    if stack.settings.database_schema:
        env["SLUICE_DATABASE_SCHEMA"] = stack.settings.database_schema
    cli = [sys.executable, "-m", "sluice", "token"]
    out = subprocess.run(
        [*cli, "create", "--name", "laptop", "--role", "viewer", "--expires", "1d"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    token = out.stdout.strip().splitlines()[-1]
    assert token.startswith("sluice_") and "shown once" in out.stderr
    assert (await stack.http.get("/api/v1/executions", headers=bearer(token))).status_code == 200
    listing = subprocess.run([*cli, "list", "--json"], capture_output=True, text=True, env=env, check=True)
    [entry] = [t for t in json.loads(listing.stdout) if t["name"] == "laptop"]
    assert entry["role"] == "viewer" and "token_hash" not in entry
    subprocess.run([*cli, "revoke", "laptop"], capture_output=True, text=True, env=env, check=True)
    assert (await stack.http.get("/api/v1/executions", headers=bearer(token))).status_code == 401
    bad = subprocess.run(
        [*cli, "create", "--name", "x y", "--role", "viewer"], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 1 and "Traceback" not in bad.stderr


async def test_oidc_tokens_from_a_local_identity_provider(make_stack: StackFactory) -> None:
    rs, es = rsa_key(), ec_key()
    with oidc_provider(rs, es) as idp:
        stack = await make_stack(
            auth="oidc",
            oidc_issuer=idp.issuer,
            oidc_audience="sluice",
            oidc_roles_claim="realm_access.roles",
            oidc_jwks_cache="3s",
        )
        http = stack.http

        async def status(token: str, method: str = "GET", path: str = "/api/v1/executions") -> int:
            return (await http.request(method, path, headers=bearer(token))).status_code

        operator = idp.token(
            rs, realm_access={"roles": ["offline_access", "operator"]}, preferred_username="ana"
        )
        assert await status(operator) == 200
        assert await status(operator, "GET", "/api/v1/tokens") == 403  # admin only
        assert await status(idp.token(es, realm_access={"roles": "admin"})) == 200  # ES256, role as a string
        assert await status(idp.token(es, realm_access={"roles": ["admin"]}), "GET", "/api/v1/tokens") == 200
        assert await status(idp.token(rs, ttl=-60, realm_access={"roles": ["admin"]})) == 401  # expired
        assert await status(idp.token(rs, audience="other", realm_access={"roles": ["admin"]})) == 401
        assert await status(idp.token(rs, issuer="http://evil", realm_access={"roles": ["admin"]})) == 401
        no_role = await http.get(
            "/api/v1/executions", headers=bearer(idp.token(rs, realm_access={"roles": ["x"]}))
        )
        assert no_role.status_code == 403 and "has no Sluice role" in no_role.json()["detail"]
        forged = rsa_key()
        forged.kid = rs.kid  # same key id, other key: the signature does not verify
        assert await status(idp.token(forged, realm_access={"roles": ["admin"]})) == 401

        # Key rotation: a token signed by a key the cache does not know makes Sluice fetch the JWKS again.
        await asyncio.sleep(3.1)  # past the refetch cooldown (SLUICE_OIDC_JWKS_CACHE, at most 30 s)
        fetches = idp.jwks_fetches
        rotated = rsa_key()
        idp.keys.append(rotated)
        assert await status(idp.token(rotated, realm_access={"roles": ["viewer"]})) == 200
        assert idp.jwks_fetches == fetches + 1
        for _ in range(3):
            assert await status(idp.token(rotated, realm_access={"roles": ["viewer"]})) == 200
        assert idp.jwks_fetches == fetches + 1  # cached


async def test_without_auth_only_loopback_is_served(make_stack: StackFactory) -> None:
    stack = await make_stack()  # SLUICE_AUTH=none
    assert (await stack.http.get("/api/v1/executions")).status_code == 200
    # The same app seen from another address (as behind a misconfigured proxy): refused.
    transport = httpx.ASGITransport(app=stack.app, client=("10.1.2.3", 5555))  # type: ignore[attr-defined]
    async with httpx.AsyncClient(transport=transport, base_url="http://sluice") as remote:
        resp = await remote.get("/api/v1/executions")
    assert resp.status_code == 403 and resp.json()["error_code"] == "LOOPBACK_ONLY"
    # DNS rebinding: a page of evil.example whose name resolves to 127.0.0.1 calls the local API.
    rebound = await stack.http.post(
        "/api/v1/configs",
        content="name: x",
        headers={
            "Host": f"evil.example:{stack.base_url.rsplit(':', 1)[1]}",
            "Content-Type": "application/yaml",
        },
    )
    assert rebound.status_code == 403 and rebound.json()["error_code"] == "LOOPBACK_ONLY"
    for host in ("localhost:8080", "127.0.0.1", "[::1]:8080"):
        assert (await stack.http.get("/api/v1/configs", headers={"Host": host})).status_code == 200


def test_sluice_api_refuses_a_network_address_without_auth(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env["SLUICE_DATA_DIR"] = str(tmp_path)
    cmd = [sys.executable, "-m", "sluice", "api", "--host", "0.0.0.0", "--port", str(free_port())]
    refused = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert refused.returncode == 2
    assert "SLUICE_AUTH=token" in refused.stderr and "SLUICE_AUTH_ALLOW_INSECURE" in refused.stderr
    assert "Traceback" not in refused.stderr


async def test_an_explicit_insecure_opt_in_serves_the_network(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env.update(
        {
            "SLUICE_DATA_DIR": str(tmp_path),
            "SLUICE_AUTH_ALLOW_INSECURE": "true",
            "SLUICE_TEMPORAL_ADDRESS": "127.0.0.1:1",
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluice", "api", "--host", "0.0.0.0", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(200):
                try:
                    if (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                        break
                except httpx.HTTPError:
                    await asyncio.sleep(0.05)
            assert (await http.get(f"http://127.0.0.1:{port}/api/v1/configs")).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_query_tokens_never_reach_the_access_log() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/api/v1/executions/x/logs?level=info&token=sluice_secret123", "1.1", 200),
        None,
    )
    RedactQueryTokens().filter(record)
    assert "sluice_secret123" not in record.getMessage() and "token=[redacted]" in record.getMessage()
    assert "level=info" in record.getMessage()
