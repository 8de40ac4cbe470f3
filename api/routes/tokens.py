"""/api/v1/tokens: API tokens, for admins (the same as `sluice token create|list|revoke`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from sluice.api.auth import Admin
from sluice.api.deps import ServicesDep
from sluice.api.responses import BAD_REQUEST, CONFLICT, NOT_FOUND
from sluice.api.schemas import TokenCreatedResponse, TokenCreateRequest, TokenResponse
from sluice.durations import parse_duration
from sluice.errors import InvalidArgumentError

router = APIRouter(prefix="/tokens", tags=["tokens"])
TokenName = Annotated[str, Path(min_length=1, max_length=128)]
MAX_LIFETIME = timedelta(days=3650)


@router.get("", response_model=list[TokenResponse])
async def list_tokens(services: ServicesDep, _: Admin) -> list[TokenResponse]:
    """Every token with its role, creator, last use, expiry and revocation (never the token)."""
    return [TokenResponse.model_validate(r) for r in await services.tokens.list()]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TokenCreatedResponse,
    responses={**BAD_REQUEST, **CONFLICT},
)
async def create_token(
    body: TokenCreateRequest, services: ServicesDep, principal: Admin
) -> TokenCreatedResponse:
    """A new token: the answer is the only place it is ever shown."""
    expires_in = None
    if body.expires_in is not None:
        try:
            expires_in = parse_duration(body.expires_in)
        except ValueError as exc:
            raise InvalidArgumentError(str(exc), error_code="INVALID_DURATION") from None
        if expires_in > MAX_LIFETIME:
            raise InvalidArgumentError("expires_in must be at most 3650d", error_code="INVALID_DURATION")
    record, token = await services.tokens.create(
        body.name, body.role, expires_in=expires_in, created_by=principal.name
    )
    return TokenCreatedResponse.model_validate({**record.model_dump(), "token": token})


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
async def revoke_token(name: TokenName, services: ServicesDep, _: Admin) -> Response:
    """Revoke a token: it stops working at once; its name stays taken (the audit trail keeps it)."""
    await services.tokens.revoke(name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
