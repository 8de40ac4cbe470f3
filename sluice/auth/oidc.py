"""OIDC: JWTs signed by an identity provider (RS256/ES256), checked against its JWKS.

Signing keys come from the issuer's discovery document (or SLUICE_OIDC_JWKS_URL) through pyjwt's
PyJWKClient: cached for SLUICE_OIDC_JWKS_CACHE, fetched again when a token names a key id the
cache does not hold (key rotation). The role comes from a configurable claim.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

import jwt

from sluice.auth.roles import Principal, Role
from sluice.errors import PermissionDeniedError, UnauthenticatedError
from sluice.settings import Settings

FETCH_TIMEOUT = 10.0


class OidcVerifier:
    def __init__(self, settings: Settings):
        if not settings.oidc_issuer or not settings.oidc_audience:
            raise ValueError("SLUICE_AUTH=oidc needs SLUICE_OIDC_ISSUER and SLUICE_OIDC_AUDIENCE")
        self.issuer = settings.oidc_issuer
        self.audience = settings.oidc_audience
        self.algorithms = [a.strip() for a in settings.oidc_algorithms.split(",") if a.strip()]
        self.roles_claim = settings.oidc_roles_claim
        self.cache_seconds = int(settings.seconds("oidc_jwks_cache"))
        self._jwks_url = settings.oidc_jwks_url
        self._client: jwt.PyJWKClient | None = None
        self._lock = asyncio.Lock()

    async def verify(self, token: str) -> Principal:
        try:
            client = await self._keys()
            key = await asyncio.to_thread(client.get_signing_key_from_jwt, token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except (jwt.PyJWTError, OSError, ValueError) as exc:
            raise UnauthenticatedError(f"invalid token: {_reason(exc)}") from None
        role = highest_role(_claim(claims, self.roles_claim))
        name = str(claims.get("preferred_username") or claims.get("email") or claims["sub"])
        if role is None:
            raise PermissionDeniedError(
                f"{name} has no Sluice role in claim {self.roles_claim!r} "
                f"(expected one of {', '.join(r.value for r in Role)})"
            )
        return Principal(name=name[:255], role=role, kind="oidc")

    async def _keys(self) -> jwt.PyJWKClient:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    url = self._jwks_url or await asyncio.to_thread(self._discover)
                    self._client = jwt.PyJWKClient(
                        url,
                        cache_jwk_set=True,
                        lifespan=max(self.cache_seconds, 1),
                        timeout=int(FETCH_TIMEOUT),
                    )
        return self._client

    def _discover(self) -> str:
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as resp:
            document: dict[str, Any] = json.load(resp)
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise ValueError(f"{url} names no jwks_uri")
        return jwks_uri


def highest_role(value: Any) -> Role | None:
    """A claim holds one role or a list of them; unknown names are ignored."""
    names = value if isinstance(value, list) else [value]
    roles = [Role(n) for n in names if isinstance(n, str) and n in Role.__members__]
    return max(roles, key=lambda r: r.rank) if roles else None


def _claim(claims: dict[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _reason(exc: Exception) -> str:
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "expired"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "wrong audience"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "wrong issuer"
    if isinstance(exc, jwt.PyJWKClientError):
        return "signing key not found"
    if isinstance(exc, jwt.PyJWTError):
        return "malformed or badly signed"
    return "signing keys unavailable"
