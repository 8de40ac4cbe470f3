"""Lazy, shared Temporal client for the API: the API starts (and serves reads) while Temporal is
down, and answers 503 for operations that need it."""

from __future__ import annotations

import asyncio

from temporalio.client import Client

from sluice.errors import UnavailableError
from sluice.settings import Settings
from sluice.temporal import connect

CONNECT_TIMEOUT = 5.0


class TemporalGateway:
    def __init__(self, settings: Settings, client: Client | None = None):
        self.settings = settings
        self._client = client
        self._lock = asyncio.Lock()

    async def client(self) -> Client:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await asyncio.wait_for(connect(self.settings), CONNECT_TIMEOUT)
                except (TimeoutError, ConnectionError) as exc:
                    raise UnavailableError(
                        f"Temporal is not reachable at {self.settings.temporal_address}",
                        error_code="TEMPORAL_UNAVAILABLE",
                    ) from exc
            return self._client

    def forget(self) -> None:
        """Drop a client whose connection failed, so the next call reconnects."""
        self._client = None
