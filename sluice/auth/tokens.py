"""API tokens: random secrets shown once, stored as SHA-256, with a role, an expiry and revocation."""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from sluice.auth.roles import Principal, Role
from sluice.clock import as_utc, utcnow
from sluice.db.models import ApiTokenRecord
from sluice.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError

PREFIX = "sluice_"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")
TOUCH_EVERY = timedelta(minutes=1)  # last_used_at is approximate: no write per request


def hash_token(token: str) -> str:
    # Tokens are 256-bit random strings, so a plain SHA-256 is safe to store (no salt or KDF needed).
    return hashlib.sha256(token.encode()).hexdigest()


def is_active(record: ApiTokenRecord, now: datetime | None = None) -> bool:
    now = now or utcnow()
    expires = as_utc(record.expires_at)
    return record.revoked_at is None and (expires is None or expires > now)


class TokenService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]):
        self.sessions = sessions

    async def create(
        self, name: str, role: Role, *, expires_in: timedelta | None, created_by: str | None
    ) -> tuple[ApiTokenRecord, str]:
        """The new token's record and the token itself (never stored, never shown again)."""
        if not NAME.match(name):
            raise InvalidArgumentError(
                "token name must be 1-128 letters, digits and _.@- (starting with a letter or digit)",
                error_code="INVALID_TOKEN_NAME",
            )
        token = PREFIX + secrets.token_urlsafe(32)
        now = utcnow()
        record = ApiTokenRecord(
            name=name,
            role=role.value,
            token_hash=hash_token(token),
            created_at=now,
            created_by=created_by,
            expires_at=now + expires_in if expires_in else None,
        )
        async with self.sessions() as session:
            session.add(record)
            try:
                await session.commit()
            except IntegrityError:
                raise AlreadyExistsError(
                    f"a token named {name!r} exists (revoked tokens keep their name)",
                    error_code="TOKEN_EXISTS",
                ) from None
            await session.refresh(record)
        return record, token

    async def list(self) -> list[ApiTokenRecord]:
        async with self.sessions() as session:
            return list((await session.exec(select(ApiTokenRecord).order_by(col(ApiTokenRecord.name)))).all())

    async def revoke(self, name: str) -> ApiTokenRecord:
        async with self.sessions() as session:
            record = (await session.exec(select(ApiTokenRecord).where(ApiTokenRecord.name == name))).first()
            if record is None:
                raise NotFoundError(f"no token named {name!r}", error_code="TOKEN_NOT_FOUND")
            if record.revoked_at is None:
                record.revoked_at = utcnow()
                session.add(record)
                await session.commit()
                await session.refresh(record)
            return record

    async def authenticate(self, token: str) -> Principal | None:
        """The token's principal, or None for an unknown, revoked or expired token."""
        if not token.startswith(PREFIX) or len(token) > 200:
            return None
        now = utcnow()
        async with self.sessions() as session:
            record = (
                await session.exec(
                    select(ApiTokenRecord).where(ApiTokenRecord.token_hash == hash_token(token))
                )
            ).first()
            if record is None or not is_active(record, now):
                return None
            last = as_utc(record.last_used_at)
            if last is None or now - last > TOUCH_EVERY:
                record.last_used_at = now
                session.add(record)
                await session.commit()
        return Principal(name=record.name, role=Role(record.role), kind="token")
