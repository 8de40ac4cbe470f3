"""Async engine and sessions for SQLite (default) and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, event
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel import Session
from sqlmodel.ext.asyncio.session import AsyncSession

from sluice.settings import Settings

T = TypeVar("T")

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+psycopg",
}


def async_url(url: str) -> str:
    """Accept the URLs people write (sqlite:///, postgresql://) and pick an async driver."""
    parsed = make_url(url)
    driver = _ASYNC_DRIVERS.get(parsed.drivername, parsed.drivername)
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def create_engine(settings: Settings, url: str | None = None, schema: str | None = None) -> AsyncEngine:
    url = async_url(url or settings.resolved_database_url)
    schema = schema or settings.database_schema
    parsed = make_url(url)
    # A file has no connection to lose: pinging SQLite before every checkout only cost round trips.
    kwargs: dict[str, Any] = {"pool_pre_ping": parsed.get_backend_name() != "sqlite"}
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        connect_args["timeout"] = 30
    elif schema:
        if parsed.drivername == "postgresql+asyncpg":
            connect_args["server_settings"] = {"search_path": schema}
        else:
            connect_args["options"] = f"-csearch_path={schema}"
    engine = create_async_engine(url, connect_args=connect_args, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


class SyncTransactions:
    """Run synchronous database work, one transaction per call (committed when `work` returns,
    rolled back if it raises).

    On a SQLite file the work runs whole in one dedicated thread on a synchronous connection: one
    hand-off per transaction instead of aiosqlite's several per statement, and the process's
    writes queue in one place instead of contending for the file's lock. Elsewhere it runs on the
    async engine through `run_sync`.
    """

    def __init__(self, engine: AsyncEngine):
        self.engine = engine
        self._sqlite = sqlite_file_engine(engine)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sluice-db") if self._sqlite else None

    async def run(self, work: Callable[[Session], T]) -> T:
        if self._sqlite is not None:
            sqlite = self._sqlite

            def call() -> T:
                with Session(sqlite, expire_on_commit=False) as session, session.begin():
                    return work(session)

            return await asyncio.get_running_loop().run_in_executor(self._thread, call)
        async with AsyncSession(self.engine, expire_on_commit=False) as session, session.begin():
            return await session.run_sync(work)

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)
        if self._sqlite is not None:
            self._sqlite.dispose()


def sqlite_file_engine(engine: AsyncEngine) -> Engine | None:
    """A synchronous engine on the same SQLite file, for a writer that runs whole transactions in
    its own thread (one hand-off per transaction instead of aiosqlite's one per statement); None
    for other databases and for in-memory SQLite (a second connection would see another database)."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    sync = sa_create_engine(url.set(drivername="sqlite"), connect_args={"timeout": 30})
    event.listen(sync, "connect", _sqlite_pragmas)
    return sync


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the API read while workers in other processes write the same file.
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
