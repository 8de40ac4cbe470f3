"""INSERT ... ON CONFLICT for SQLite and PostgreSQL alike (retried activities re-insert)."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from sqlalchemy import Connection, Executable, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert
from sqlmodel import Session, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

_CHUNK = 500


async def insert_ignore(
    session: AsyncSession,
    model: type[SQLModel],
    rows: list[dict[str, Any]],
    *,
    update: tuple[str, ...] = (),
) -> None:
    """Insert rows, skipping those whose primary key exists; with `update`, set those columns of
    existing rows to the new values instead."""
    if not rows:
        return
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    stmt = upsert_statement(dialect, model.__table__, update)  # type: ignore[attr-defined]
    # executemany of one cached statement: compiling a many-row VALUES clause cost more than the rows.
    for i in range(0, len(rows), _CHUNK):
        await session.exec(stmt, params=rows[i : i + _CHUNK])  # type: ignore[call-overload]
        await asyncio.sleep(0)  # big inserts must not starve the heartbeat task


def execute_many(conn: Connection | Session, stmt: Executable, rows: list[dict[str, Any]]) -> None:
    """One statement over many rows, a chunk at a time, inside a synchronous transaction."""
    for i in range(0, len(rows), _CHUNK):
        conn.execute(stmt, rows[i : i + _CHUNK])


@functools.lru_cache(maxsize=64)
def upsert_statement(dialect: str, table: Table, update: tuple[str, ...] = ()) -> Insert:
    """Built once per shape: building `excluded` proxies every column, which cost more than the
    insert of a row or two that most batches write."""
    module = postgresql if dialect == "postgresql" else sqlite
    keys = [c.name for c in table.primary_key.columns]
    stmt = module.insert(table)
    if not update:
        return stmt.on_conflict_do_nothing()
    return stmt.on_conflict_do_update(
        index_elements=keys,
        set_={name: stmt.excluded[name] for name in update},
    )
