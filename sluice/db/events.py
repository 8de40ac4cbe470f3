"""Lifecycle events: log rows with a typed `event` and structured `data`.

They are what the logs endpoint shows as Sluice's own lines, and what the live streams (SSE,
WebSocket) turn into status and node-completion events: one table, one source of truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert
from sqlmodel import Session

from sluice.clock import utcnow
from sluice.db.models import ExecutionLogRecord
from sluice.db.upsert import execute_many

EXECUTION_STARTED = "execution.started"
EXECUTION_CANCEL_REQUESTED = "execution.cancel_requested"
REPLAY_PUBLISHED = "replay.published"
RESUME_PREPARED = "resume.prepared"
ROUTE_FINISHED = "route.finished"
EXECUTION_FINISHED = "execution.finished"

_LEVEL = {"completed": "info", "failed": "error", "cancelled": "warn", "interrupted": "error"}
_INSERT = insert(ExecutionLogRecord.__table__)  # type: ignore[arg-type]


def insert_events(session: Session | Connection, events: Sequence[dict[str, Any]]) -> None:
    """Store log rows (`lifecycle_row`s) with plain INSERTs in the caller's synchronous
    transaction: the hot paths (every start, every finish) skip the ORM and its model instances."""
    execute_many(session, _INSERT, list(events))


def lifecycle_row(
    execution_id: str,
    event: str,
    message: str,
    *,
    level: str = "info",
    route: str | None = None,
    data: dict[str, Any] | None = None,
    timestamp: datetime | None = None,
) -> dict[str, Any]:
    """A lifecycle event as the values of its log row (`ExecutionLogRecord(**row)` where a session
    adds it with other changes)."""
    return {
        "execution_id": execution_id,
        "route": route,
        "level": level,
        "message": message,
        "kind": "lifecycle",
        "correlation_id": None,
        "event": event,
        "data": data,
        "timestamp": timestamp or utcnow(),
    }


def execution_finished(
    execution_id: str,
    status: str,
    *,
    error: str | None,
    rows_written: int | None,
    duration_ms: int | None,
    timestamp: datetime | None = None,
) -> dict[str, Any]:
    return lifecycle_row(
        execution_id,
        EXECUTION_FINISHED,
        f"execution {status}" + (f": {error}" if error else ""),
        level=_LEVEL.get(status, "info"),
        data={"status": status, "rows_written": rows_written, "duration_ms": duration_ms, "error": error},
        timestamp=timestamp,
    )
