"""Lifecycle events: log rows with a typed `event` and structured `data`.

They are what the logs endpoint shows as Sluice's own lines, and what the live streams (SSE,
WebSocket) turn into status and node-completion events: one table, one source of truth.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sluice.clock import utcnow
from sluice.db.models import ExecutionLogRecord

EXECUTION_STARTED = "execution.started"
EXECUTION_CANCEL_REQUESTED = "execution.cancel_requested"
REPLAY_PUBLISHED = "replay.published"
RESUME_PREPARED = "resume.prepared"
ROUTE_FINISHED = "route.finished"
EXECUTION_FINISHED = "execution.finished"

_LEVEL = {"completed": "info", "failed": "error", "cancelled": "warn", "interrupted": "error"}


def lifecycle(
    execution_id: str,
    event: str,
    message: str,
    *,
    level: str = "info",
    route: str | None = None,
    data: dict[str, Any] | None = None,
    timestamp: datetime | None = None,
) -> ExecutionLogRecord:
    return ExecutionLogRecord(
        execution_id=execution_id,
        route=route,
        level=level,
        message=message,
        kind="lifecycle",
        event=event,
        data=data,
        timestamp=timestamp or utcnow(),
    )


def execution_finished(
    execution_id: str,
    status: str,
    *,
    error: str | None,
    rows_written: int | None,
    duration_ms: int | None,
    timestamp: datetime | None = None,
) -> ExecutionLogRecord:
    return lifecycle(
        execution_id,
        EXECUTION_FINISHED,
        f"execution {status}" + (f": {error}" if error else ""),
        level=_LEVEL.get(status, "info"),
        data={"status": status, "rows_written": rows_written, "duration_ms": duration_ms, "error": error},
        timestamp=timestamp,
    )
