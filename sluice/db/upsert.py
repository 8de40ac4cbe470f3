"""INSERT ... ON CONFLICT DO NOTHING for SQLite and PostgreSQL alike (retried activities re-insert)."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

_CHUNK = 500


async def insert_ignore(session: AsyncSession, model: type[SQLModel], rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    module = postgresql if dialect == "postgresql" else sqlite
    table = model.__table__  # type: ignore[attr-defined]
    for i in range(0, len(rows), _CHUNK):
        stmt = module.insert(table).values(rows[i : i + _CHUNK]).on_conflict_do_nothing()
        await session.exec(stmt)  # type: ignore[call-overload]
        await asyncio.sleep(0)  # big inserts must not starve the heartbeat task
