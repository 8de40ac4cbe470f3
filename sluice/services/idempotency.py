"""Idempotency-Key for requests that start work: a retry with the same key and the same request
gets the same execution, even when the first attempt died half-way (its execution id was
reserved first, so the retry finishes starting that very execution); the same key with another
request is refused (422)."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, delete
from sqlmodel.ext.asyncio.session import AsyncSession

from sluice.clock import as_utc, utcnow
from sluice.db.models import IdempotencyRecord
from sluice.errors import IdempotencyKeyReusedError, InvalidArgumentError
from sluice.ids import uuid7

KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces


class IdempotencyService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], ttl: timedelta):
        self.sessions = sessions
        self.ttl = ttl

    async def reserve(self, principal: str, key: str, fingerprint: str) -> str:
        """The execution id this (principal, key) stands for: new, or the first attempt's."""
        if not KEY.match(key):
            raise InvalidArgumentError(
                "Idempotency-Key must be 1-255 printable ASCII characters",
                error_code="INVALID_IDEMPOTENCY_KEY",
            )
        for _ in range(2):  # a concurrent first use wins the insert; the loser reads its row
            async with self.sessions() as session:
                row = await session.get(IdempotencyRecord, (principal, key))
                if row is not None and utcnow() - (as_utc(row.created_at) or utcnow()) > self.ttl:
                    await session.delete(row)
                    await session.commit()
                    row = None
                if row is not None:
                    if row.request_hash != fingerprint:
                        raise IdempotencyKeyReusedError(
                            "this Idempotency-Key was used with a different request; use a new key"
                        )
                    return row.execution_id
                row = IdempotencyRecord(
                    principal=principal, key=key, request_hash=fingerprint, execution_id=str(uuid7())
                )
                session.add(row)
                try:
                    await session.commit()
                    return row.execution_id
                except IntegrityError:
                    await session.rollback()
        raise IdempotencyKeyReusedError("this Idempotency-Key is being used by a concurrent request")

    async def purge(self) -> int:
        """Forget keys older than the retention (kept at least SLUICE_IDEMPOTENCY_TTL)."""
        async with self.sessions() as session:
            result = await session.exec(
                delete(IdempotencyRecord).where(col(IdempotencyRecord.created_at) < utcnow() - self.ttl)
            )  # type: ignore[call-overload]
            await session.commit()
            return int(result.rowcount or 0)
