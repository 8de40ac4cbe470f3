"""Authentication and roles for every route: one dependency resolves the caller, `require(role)`
checks it. HTTP, SSE and the WebSocket share it (the Prefect basic-auth bug that forgot WebSockets
is the one to avoid): `Authorization: Bearer`, or for browsers a `token` query parameter on GET
and WebSocket requests, or the WebSocket subprotocol pair `bearer, <token>`."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from sluice.auth.roles import LOCAL, Principal, Role
from sluice.errors import PermissionDeniedError, UnauthenticatedError
from sluice.settings import is_loopback

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An API token (`sluice token create`) or, with SLUICE_AUTH=oidc, a JWT of the identity provider",
)
token_query = APIKeyQuery(
    name="token",
    auto_error=False,
    scheme_name="token_query",
    description="The same credential as a query parameter, for browsers (EventSource, downloads); GET only",
)
WS_PROTOCOL = "bearer"


def websocket_token(connection: HTTPConnection) -> str | None:
    """`Sec-WebSocket-Protocol: bearer, <token>` (browsers cannot set headers on a WebSocket)."""
    offered = [p.strip() for p in connection.headers.get("sec-websocket-protocol", "").split(",")]
    if WS_PROTOCOL in offered and offered.index(WS_PROTOCOL) + 1 < len(offered):
        return offered[offered.index(WS_PROTOCOL) + 1]
    return None


def credential(connection: HTTPConnection) -> str | None:
    header = connection.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if connection.scope["type"] == "websocket" or connection.scope.get("method") in ("GET", "HEAD"):
        return connection.query_params.get("token") or websocket_token(connection)
    return None


def host_name(header: str) -> str:
    """`localhost:8080` -> `localhost`, `[::1]:8080` -> `::1`."""
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


async def authenticate(connection: HTTPConnection) -> Principal:
    """The caller, or UnauthenticatedError (401) / PermissionDeniedError (403)."""
    services = connection.app.state.services
    settings = services.settings
    if settings.auth == "none":
        peer = connection.client.host if connection.client else ""
        # The Host check stops DNS rebinding: a web page whose name resolves to 127.0.0.1 must
        # not reach an unauthenticated local API from the user's browser.
        host = host_name(connection.headers.get("host", ""))
        if settings.auth_allow_insecure or (is_loopback(peer) and is_loopback(host)):
            return LOCAL
        raise PermissionDeniedError(
            "this API runs without authentication and serves loopback clients (Host: localhost) only",
            error_code="LOOPBACK_ONLY",
        )
    token = credential(connection)
    if token is None:
        raise UnauthenticatedError("authentication required: send Authorization: Bearer <token>")
    if settings.auth == "token":
        principal = await services.tokens.authenticate(token)
        if principal is None:
            raise UnauthenticatedError("invalid, expired or revoked token")
        return principal
    return await services.oidc.verify(token)


async def current_principal(
    request: Request,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    _query: Annotated[str | None, Security(token_query)],
) -> Principal:
    # The two Security parameters put both schemes in the OpenAPI document (the Authorize button).
    cached = getattr(request.state, "principal", None)
    if cached is None:
        cached = await authenticate(request)
        request.state.principal = cached
    return cached


def require(role: Role) -> Callable[..., Awaitable[Principal]]:
    async def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not principal.role.allows(role):
            raise PermissionDeniedError(
                f"{principal.name} is {principal.role.value}; this needs {role.value}"
            )
        return principal

    check.__name__ = f"require_{role.value}"
    return check


Viewer = Annotated[Principal, Depends(require(Role.viewer))]
Operator = Annotated[Principal, Depends(require(Role.operator))]
Editor = Annotated[Principal, Depends(require(Role.editor))]
Admin = Annotated[Principal, Depends(require(Role.admin))]


TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&\s]*")


class RedactQueryTokens(logging.Filter):
    """Access logs print request paths: a `?token=` credential must not land in a log file."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                TOKEN_IN_QUERY.sub(r"\1[redacted]", a) if isinstance(a, str) else a for a in record.args
            )
        if isinstance(record.msg, str):
            record.msg = TOKEN_IN_QUERY.sub(r"\1[redacted]", record.msg)
        return True


def redact_access_logs() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactQueryTokens) for f in access.filters):
        access.addFilter(RedactQueryTokens())
