"""Execution logs: queries, and the in-process hub that turns new log rows into live events.

Workers write logs to the database from other processes; the hub tails the table (one indexed
query every 200 ms while anyone listens) and fans rows out to every SSE stream and WebSocket, so
clients are pushed events instead of each polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from sluice.db.models import ExecutionLogRecord

log = logging.getLogger("sluice.logs")
LEVELS = ("debug", "info", "warn", "error")
QUEUE_LIMIT = 10_000


def levels_at_least(level: str) -> list[str]:
    return list(LEVELS[LEVELS.index(level) :])


class LogService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]):
        self.sessions = sessions

    async def fetch(
        self,
        execution_id: str,
        *,
        route: str | None = None,
        level: str | None = None,
        since: datetime | None = None,
        after_id: int = 0,
        limit: int = 10_000,
    ) -> list[ExecutionLogRecord]:
        query = select(ExecutionLogRecord).where(
            ExecutionLogRecord.execution_id == execution_id, col(ExecutionLogRecord.id) > after_id
        )
        if route:
            query = query.where(ExecutionLogRecord.route == route)
        if level:
            query = query.where(col(ExecutionLogRecord.level).in_(levels_at_least(level)))
        if since:
            query = query.where(col(ExecutionLogRecord.timestamp) >= since)
        async with self.sessions() as session:
            rows = await session.exec(query.order_by(col(ExecutionLogRecord.id)).limit(limit))
            return list(rows.all())

    async def iterate(self, execution_id: str, **filters: object) -> AsyncIterator[ExecutionLogRecord]:
        """Every matching row, page by page (exports of long runs stay bounded in memory)."""
        after = 0
        while True:
            page = await self.fetch(execution_id, after_id=after, limit=5000, **filters)  # type: ignore[arg-type]
            for row in page:
                yield row
            if len(page) < 5000:
                return
            after = page[-1].id or after

    async def max_id(self) -> int:
        async with self.sessions() as session:
            return int((await session.exec(select(func.max(ExecutionLogRecord.id)))).one() or 0)

    async def tail(self, after_id: int, limit: int = 1000) -> list[ExecutionLogRecord]:
        async with self.sessions() as session:
            rows = await session.exec(
                select(ExecutionLogRecord)
                .where(col(ExecutionLogRecord.id) > after_id)
                .order_by(col(ExecutionLogRecord.id))
                .limit(limit)
            )
            return list(rows.all())


@dataclass(eq=False)
class Subscription:
    execution_id: str | None
    queue: asyncio.Queue[ExecutionLogRecord] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    dropped: int = 0

    def offer(self, row: ExecutionLogRecord) -> None:
        if self.execution_id is not None and row.execution_id != self.execution_id:
            return
        if self.queue.full():  # a slow client loses its oldest events, never stalls the others
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(row)


class EventHub:
    def __init__(self, logs: LogService, interval: float = 0.2):
        self.logs = logs
        self.interval = interval
        self._subs: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._cursor = 0
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def subscribe(
        self, execution_id: str | None = None, since_id: int | None = None
    ) -> AsyncIterator[Subscription]:
        sub = Subscription(execution_id)
        async with self._lock:
            if self._task is None or self._task.done():
                self._cursor = await self.logs.max_id()
            if since_id is not None and since_id < self._cursor:
                # A reconnecting client asks for what it missed.
                for row in await self.logs.tail(since_id, limit=QUEUE_LIMIT):
                    if row.id is not None and row.id <= self._cursor:
                        sub.offer(row)
            self._subs.add(sub)
            if self._task is None or self._task.done():
                self._task = asyncio.create_task(self._run())
        try:
            yield sub
        finally:
            self._subs.discard(sub)

    @property
    def cursor(self) -> int:
        return self._cursor

    async def _run(self) -> None:
        while self._subs:
            try:
                rows = await self.logs.tail(self._cursor)
            except Exception:
                log.exception("tailing execution logs failed")
                rows = []
            for row in rows:
                self._cursor = max(self._cursor, row.id or 0)
                for sub in list(self._subs):
                    sub.offer(row)
            if len(rows) < 1000:
                await asyncio.sleep(self.interval)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
