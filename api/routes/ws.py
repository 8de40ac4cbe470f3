"""/api/ws: one WebSocket for live events across executions (seed 002): run status changes, node
completions and log lines, optionally for one execution. `since_id` lets a reconnecting client
catch up on what it missed."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from sluice.api.schemas import run_status

from sluice.clock import as_utc
from sluice.db.events import EXECUTION_FINISHED, EXECUTION_STARTED, REPLAY_PUBLISHED, ROUTE_FINISHED
from sluice.db.models import ExecutionLogRecord

router = APIRouter(tags=["events"])


def events_of(row: ExecutionLogRecord) -> list[dict[str, Any]]:
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


@router.websocket("/api/ws")
async def events_socket(websocket: WebSocket) -> None:
    services = websocket.app.state.services
    execution_id = websocket.query_params.get("execution_id")
    since = websocket.query_params.get("since_id")
    await websocket.accept()
    try:
        since_id = int(since) if since is not None else None
        if since_id is not None and since_id < 0:
            raise ValueError
    except ValueError:
        await websocket.send_json({"type": "error", "message": "since_id must be a non-negative integer"})
        await websocket.close(code=1008)
        return
    if execution_id is not None:
        try:
            execution_id = (await services.executions.find(execution_id)).id
        except Exception:
            await websocket.send_json({"type": "error", "message": f"execution {execution_id} not found"})
            await websocket.close(code=1008)
            return

    async def watch_disconnect() -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                await websocket.receive_text()  # clients may send pings; anything else is ignored

    reader = asyncio.create_task(watch_disconnect())
    try:
        async with services.hub.subscribe(execution_id, since_id=since_id) as sub:
            await websocket.send_json(
                {"type": "connected", "execution_id": execution_id, "cursor": services.hub.cursor}
            )
            while not reader.done():
                getter = asyncio.create_task(sub.queue.get())
                done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                for event in events_of(getter.result()):
                    await websocket.send_json(event)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
            await reader
