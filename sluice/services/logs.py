"""Execution logs: queries, and the in-process hub that turns new log rows into live events.

Workers write logs to the database from other processes; the hub tails the table (one indexed
query every 200 ms while anyone listens) and fans rows out to every SSE stream and WebSocket, so
clients are pushed events instead of each polling.

Every stored line reaches every stream once and in id order, also on PostgreSQL, where ids are
taken when a row is inserted but become visible when its transaction commits: a smaller id can
appear after a larger one. The hub therefore only hands out rows up to its *watermark*, the id
below which nothing can still appear: it stops at a missing id and waits up to `GAP_WAIT` for it
(an insert still committing) before deciding the id is gone for good (a rollback). SQLite assigns
ids at commit, one writer at a time, so there a gap never waits.
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
        upto: int | None = None,
        limit: int = 10_000,
    ) -> list[ExecutionLogRecord]:
        query = select(ExecutionLogRecord).where(
            ExecutionLogRecord.execution_id == execution_id, col(ExecutionLogRecord.id) > after_id
        )
        if upto is not None:
            query = query.where(col(ExecutionLogRecord.id) <= upto)
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

    async def tail(
        self, after_id: int, *, upto: int | None = None, execution_id: str | None = None, limit: int = 1000
    ) -> list[ExecutionLogRecord]:
        """Rows with after_id < id <= upto (of one execution, or all), in id order."""
        query = select(ExecutionLogRecord).where(col(ExecutionLogRecord.id) > after_id)
        if upto is not None:
            query = query.where(col(ExecutionLogRecord.id) <= upto)
        if execution_id is not None:
            query = query.where(ExecutionLogRecord.execution_id == execution_id)
        async with self.sessions() as session:
            rows = await session.exec(query.order_by(col(ExecutionLogRecord.id)).limit(limit))
            return list(rows.all())

    async def ids_after(self, after_id: int, limit: int) -> list[int]:
        async with self.sessions() as session:
            rows = await session.exec(
                select(ExecutionLogRecord.id)
                .where(col(ExecutionLogRecord.id) > after_id)
                .order_by(col(ExecutionLogRecord.id))
                .limit(limit)
            )
            return [int(i) for i in rows.all() if i is not None]

    @property
    def commits_out_of_order(self) -> bool:
        """PostgreSQL (and most servers) hand out ids before commit; SQLite does not."""
        engine = self.sessions.kw.get("bind")
        return engine is not None and engine.dialect.name != "sqlite"


@dataclass(eq=False)
class Subscription:
    """One listener's ordered view: rows after `last`, in id order, each once."""

    hub: EventHub
    execution_id: str | None
    last: int  # the highest id handed out (or covered by the listener's own history read)
    queue: asyncio.Queue[ExecutionLogRecord] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    behind: bool = False  # the queue overflowed: catch up from the database, lose nothing

    def offer(self, row: ExecutionLogRecord) -> None:
        if self.execution_id is not None and row.execution_id != self.execution_id:
            return
        if self.queue.full():  # a slow client never stalls the others; it re-reads what it missed
            self.behind = True
            return
        self.queue.put_nowait(row)

    async def next(self, wait: float) -> list[ExecutionLogRecord]:
        """The next rows in id order (empty after `wait` seconds without any)."""
        if self.behind:
            self.behind = False
            rows = await self.hub.logs.tail(
                self.last, upto=self.hub.watermark, execution_id=self.execution_id, limit=QUEUE_LIMIT
            )
            if rows:
                self.last = rows[-1].id or self.last
                self.behind = len(rows) == QUEUE_LIMIT
                return rows
        try:
            row = await asyncio.wait_for(self.queue.get(), wait)
        except TimeoutError:
            return []
        if (row.id or 0) <= self.last:
            return []
        self.last = row.id or self.last
        return [row]


class EventHub:
    GAP_WAIT = 2.0  # how long a missing id may still be an insert about to commit
    LOOKBACK = 1000  # ids below the newest that are checked for such inserts when tailing starts

    def __init__(self, logs: LogService, interval: float = 0.2):
        self.logs = logs
        self.interval = interval
        self._subs: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._watermark = 0
        self._gap_seen: tuple[int, float] | None = None  # (missing id, when first noticed)
        self._lock = asyncio.Lock()

    @property
    def watermark(self) -> int:
        """Every row with a smaller or equal id is committed (or gone for good) and handed out."""
        return self._watermark

    @contextlib.asynccontextmanager
    async def subscribe(
        self, execution_id: str | None = None, since_id: int | None = None
    ) -> AsyncIterator[Subscription]:
        """A listener for rows above the watermark; with `since_id`, also the stored rows after it
        (a reconnecting client catches up). Read history only up to `sub.last` to avoid overlap."""
        async with self._lock:
            if self._task is None or self._task.done():
                self._watermark = await self._start_watermark()
            sub = Subscription(self, execution_id, last=self._watermark)
            if since_id is not None and since_id < self._watermark:
                sub.last = since_id
                sub.behind = True  # next() reads (since_id, watermark] from the database first
            self._subs.add(sub)
            if self._task is None or self._task.done():
                self._task = asyncio.create_task(self._run())
        try:
            yield sub
        finally:
            self._subs.discard(sub)

    async def _start_watermark(self) -> int:
        newest = await self.logs.max_id()
        if not self.logs.commits_out_of_order or newest == 0:
            return newest
        # Below the newest id, an insert may still be committing: start under the first hole.
        start = max(newest - self.LOOKBACK, 0)
        expected = start + 1
        for row_id in await self.logs.ids_after(start, self.LOOKBACK):
            if row_id != expected:
                return expected - 1
            expected += 1
        return newest

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._subs:
            try:
                rows = await self.logs.tail(self._watermark)
            except Exception:
                log.exception("tailing execution logs failed")
                rows = []
            for row in rows:
                row_id = row.id or 0
                expected = self._watermark + 1
                if row_id > expected and self.logs.commits_out_of_order:
                    if self._gap_seen is None or self._gap_seen[0] != expected:
                        self._gap_seen = (expected, loop.time())
                    if loop.time() - self._gap_seen[1] < self.GAP_WAIT:
                        break  # wait: the missing ids may still commit, and order matters
                self._gap_seen = None
                self._watermark = row_id
                for sub in list(self._subs):
                    sub.offer(row)
            if len(rows) < 1000 or self._gap_seen is not None:
                await asyncio.sleep(self.interval)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
