"""What activities need from the process: settings, storage, a database session factory."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from sluice.db.engine import SyncTransactions, create_engine, session_factory
from sluice.services.lineage import LineageWriter
from sluice.settings import Settings
from sluice.storage import ObjectStorage, open_storage


@dataclass
class ActivityDeps:
    settings: Settings
    storage: ObjectStorage
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    worker_id: str = field(default_factory=lambda: f"{os.getpid()}@{socket.gethostname()}")
    transactions: SyncTransactions = field(init=False)
    lineage: LineageWriter = field(init=False)

    def __post_init__(self) -> None:
        self.transactions = SyncTransactions(self.engine)
        self.lineage = LineageWriter(self.transactions)

    @classmethod
    def from_settings(cls, settings: Settings) -> ActivityDeps:
        engine = create_engine(settings)
        return cls(
            settings=settings, storage=open_storage(settings), engine=engine, sessions=session_factory(engine)
        )

    async def close(self) -> None:
        self.transactions.close()
        await self.storage.close()
        await self.engine.dispose()
