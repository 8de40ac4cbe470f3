"""/api/ws: one WebSocket for live events across executions (seed 002): run status changes, node
completions and log lines, optionally for one execution. `since_id` lets a reconnecting client
catch up on what it missed."""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from sluice.api.logs import ws_events

router = APIRouter(tags=["events"])


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
                for event in ws_events(getter.result()):
                    await websocket.send_json(event)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
            await reader
