"""Helpers for the security tests: tokens for every role, an OIDC provider served locally, and
the API's routes as its OpenAPI document lists them."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy.ext.asyncio import AsyncEngine

from sluice.auth.roles import Role
from sluice.auth.tokens import TokenService
from sluice.db.engine import SyncTransactions, create_engine, session_factory
from tests.conftest import Stack

ROLES = list(Role)


async def role_tokens(stack: Stack) -> dict[Role, str]:
    """One API token per role, created the way `sluice token create` does."""
    engine: AsyncEngine = create_engine(stack.settings)
    transactions = SyncTransactions(engine)
    try:
        tokens = TokenService(session_factory(engine), transactions)
        return {
            role: (
                await tokens.create(
                    f"{role.value}-{uuid.uuid4().hex[:6]}", role, expires_in=None, created_by="test"
                )
            )[1]
            for role in ROLES
        }
    finally:
        transactions.close()
        await engine.dispose()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- the minimum role of every operation (what the tests hold the API to) -------------------------
def needed_role(method: str, path: str) -> Role:
    if path.startswith("/api/v1/tokens") or path == "/api/system/purge":
        return Role.admin
    if method == "GET":
        return Role.viewer
    if path.startswith("/api/v1/configs") and not path.endswith("/run"):
        return Role.editor
    return Role.operator


def concrete(path: str) -> str:
    """A path template with plausible values (the resource need not exist: auth comes first)."""
    values = {
        "config_id": str(uuid.uuid4()),
        "execution_id": str(uuid.uuid4()),
        "run_id": str(uuid.uuid4()),
        "version": "1",
        "name": "someone",
    }
    for key, value in values.items():
        path = path.replace("{" + key + "}", value)
    return path


def operations(openapi: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (method.upper(), path)
        for path, item in openapi["paths"].items()
        for method in item
        if method in ("get", "post", "put", "delete", "patch")
    ]


# -- a local OpenID provider ------------------------------------------------------------------------
@dataclass
class SigningKey:
    kid: str
    algorithm: str
    private: Any

    def jwk(self) -> dict[str, Any]:
        algo = jwt.algorithms.RSAAlgorithm if self.algorithm == "RS256" else jwt.algorithms.ECAlgorithm
        return {
            **json.loads(algo.to_jwk(self.private.public_key())),
            "kid": self.kid,
            "alg": self.algorithm,
            "use": "sig",
        }


def rsa_key() -> SigningKey:
    return SigningKey(
        f"rsa-{uuid.uuid4().hex[:8]}", "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )


def ec_key() -> SigningKey:
    return SigningKey(f"ec-{uuid.uuid4().hex[:8]}", "ES256", ec.generate_private_key(ec.SECP256R1()))


@dataclass
class Provider:
    """Serves a discovery document and a JWKS over HTTP on loopback; signs tokens for the tests."""

    issuer: str = ""
    keys: list[SigningKey] = field(default_factory=list)
    jwks_fetches: int = 0

    def token(
        self,
        key: SigningKey,
        *,
        audience: str = "sluice",
        issuer: str | None = None,
        ttl: float = 300,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        body = {
            "iss": issuer or self.issuer,
            "aud": audience,
            "sub": "user-1",
            "iat": now,
            "exp": now + int(ttl),
            **claims,
        }
        return jwt.encode(body, key.private, algorithm=key.algorithm, headers={"kid": key.kid})


@contextmanager
def oidc_provider(*keys: SigningKey) -> Iterator[Provider]:
    provider = Provider(keys=list(keys))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/.well-known/openid-configuration":
                body = {"issuer": provider.issuer, "jwks_uri": f"{provider.issuer}/jwks.json"}
            elif self.path == "/jwks.json":
                provider.jwks_fetches += 1
                body = {"keys": [k.jwk() for k in provider.keys]}
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    provider.issuer = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        server.shutdown()
        server.server_close()
