"""Log responses: live SSE streams and exports (executions API and runs facade), /api/ws events.

A finished run's stream gets everything, then closes; an active one gets its history, then new
rows as the event hub pushes them, until the run ends (then `error` for a failed run, and `status`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from sluice.api.deps import Services
from sluice.api.schemas import LogEntryResponse, run_status
from sluice.clock import as_utc
from sluice.db.events import EXECUTION_FINISHED, EXECUTION_STARTED, REPLAY_PUBLISHED, ROUTE_FINISHED
from sluice.db.models import ExecutionLogRecord, ExecutionRecord
from sluice.services.executions import TERMINAL
from sluice.services.logs import levels_at_least

KEEPALIVE_SECONDS = 5.0


def wants_sse(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "").lower()


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, default=_iso)}\n\n".encode()


def _iso(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def log_stream(
    services: Services,
    record: ExecutionRecord,
    *,
    route: str | None,
    level: str | None,
    since: datetime | None,
    log_data: Callable[[ExecutionLogRecord], dict[str, Any]],
    status_data: Callable[[ExecutionRecord], dict[str, Any]],
) -> StreamingResponse:
    logs = services.logs
    allowed = set(levels_at_least(level)) if level else None

    def matches(row: ExecutionLogRecord) -> bool:
        if route and row.route != route:
            return False
        if allowed is not None and row.level not in allowed:
            return False
        return not (since and row.timestamp and as_utc(row.timestamp) < since)

    async def finish(final: ExecutionRecord) -> AsyncIterator[bytes]:
        if final.status in ("failed", "interrupted"):
            yield sse("error", {"message": final.error or f"execution {final.status}"})
        yield sse("status", status_data(final))

    async def events() -> AsyncIterator[bytes]:
        current = record  # the endpoint just read (and reconciled) it
        if current.status in TERMINAL:
            async for row in logs.iterate(current.id, route=route, level=level, since=since):
                yield sse("log", log_data(row))
            async for chunk in finish(current):
                yield chunk
            return
        async with services.hub.subscribe(current.id) as sub:
            # History up to the hub's watermark, then the hub's rows above it: once each, in order.
            async for row in logs.iterate(current.id, upto=sub.last):
                if matches(row):
                    yield sse("log", log_data(row))
            quiet_after_end = 0
            while True:
                rows = await sub.next(KEEPALIVE_SECONDS)
                for row in rows:
                    if matches(row):
                        yield sse("log", log_data(row))
                    if row.event == EXECUTION_FINISHED:
                        async for chunk in finish(await services.executions.find(current.id)):
                            yield chunk
                        return
                if rows:
                    continue
                current = await services.executions.get(current.id)  # reconciles with Temporal
                if current.status in TERMINAL:
                    quiet_after_end += 1  # its last line is on its way; do not wait forever
                    if quiet_after_end > 2:
                        async for chunk in finish(current):
                            yield chunk
                        return
                yield b": keepalive\n\n"

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"},
    )


def export_logs(
    services: Services,
    record: ExecutionRecord,
    *,
    format: str,
    route: str | None,
    level: str | None,
    level_words: Mapping[str, str] | None = None,
) -> StreamingResponse:
    """`level_words` renames levels in text exports (seed 002 says `warning` where Sluice says `warn`)."""

    async def body() -> AsyncIterator[bytes]:
        first = True
        if format == "json":
            yield b"["
        async for row in services.logs.iterate(record.id, route=route, level=level):
            entry = LogEntryResponse.model_validate(row)
            if format == "text":
                where = f" [{entry.route}]" if entry.route else ""
                word = (level_words or {}).get(entry.level, entry.level)
                yield f"{entry.timestamp.isoformat()} {word.upper():<5}{where} {entry.message}\n".encode()
            else:
                line = entry.model_dump_json()
                if format == "json":
                    yield (b"" if first else b",") + line.encode()
                else:
                    yield line.encode() + b"\n"
            first = False
        if format == "json":
            yield b"]"

    extension, media = {
        "text": ("log", "text/plain"),
        "jsonl": ("jsonl", "application/x-ndjson"),
        "json": ("json", "application/json"),
    }[format]
    return StreamingResponse(
        body(),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="execution-{record.id}-logs.{extension}"'},
    )


def ws_events(row: ExecutionLogRecord) -> list[dict[str, Any]]:
    """What one log row means on /api/ws: a `log` event, preceded by its lifecycle event if any."""
    base = {"execution_id": row.execution_id, "timestamp": as_utc(row.timestamp).isoformat(), "id": row.id}  # type: ignore[union-attr]
    out: list[dict[str, Any]] = []
    data = row.data or {}
    if row.event in (EXECUTION_STARTED, EXECUTION_FINISHED):
        status = data.get("status", "running")
        out.append(
            {
                "type": "run_status",
                **base,
                "status": status,
                "run_status": run_status(status),
                "error": data.get("error"),
                "rows_written": data.get("rows_written"),
                "duration_ms": data.get("duration_ms"),
            }
        )
    elif row.event == ROUTE_FINISHED:
        out.append({"type": "node_completed", **base, "route": row.route, "node_id": row.route, **data})
    elif row.event == REPLAY_PUBLISHED:
        out.append({"type": "replay_published", **base, "route": row.route, **data})
    out.append(
        {
            "type": "log",
            **base,
            "route": row.route,
            "level": row.level,
            "message": row.message,
            "kind": row.kind,
        }
    )
    return out
