"""/api/ws: one WebSocket for live events across executions (seed 002): run status changes, node
completions and log lines, optionally for one execution. `since_id` lets a reconnecting client
catch up on what it missed."""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from sluice.api.auth import WS_PROTOCOL, authenticate, websocket_token
from sluice.api.errors import error_response
from sluice.api.logs import KEEPALIVE_SECONDS, ws_events
from sluice.api.schemas import MAX_ID
from sluice.auth.roles import Role
from sluice.errors import PermissionDeniedError, SluiceError

router = APIRouter(tags=["events"])


@router.websocket("/api/ws")
async def events_socket(websocket: WebSocket) -> None:
    """Needs a viewer credential like every GET: `Authorization: Bearer`, `?token=`, or the
    subprotocols `bearer, <token>`. Without one the handshake is answered 401 (403 for too small a
    role), as an ErrorResponse, before any event is sent."""
    services = websocket.app.state.services
    try:
        principal = await authenticate(websocket)
        if not principal.role.allows(Role.viewer):
            raise PermissionDeniedError(f"{principal.name} cannot read events")
    except SluiceError as exc:
        await websocket.send_denial_response(
            error_response(exc.status_code, exc.detail, exc.error_code, exc.headers)
        )
        return
    execution_id = websocket.query_params.get("execution_id")
    since = websocket.query_params.get("since_id")
    await websocket.accept(subprotocol=WS_PROTOCOL if websocket_token(websocket) else None)
    try:
        since_id = int(since) if since is not None else None
        if since_id is not None and not 0 <= since_id <= MAX_ID:
            raise ValueError
    except ValueError:
        await websocket.send_json(
            {"type": "error", "message": f"since_id must be an integer from 0 to {MAX_ID}"}
        )
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
            await websocket.send_json({"type": "connected", "execution_id": execution_id, "cursor": sub.last})
            while not reader.done():
                getter = asyncio.create_task(sub.next(KEEPALIVE_SECONDS))
                done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                for row in getter.result():
                    for event in ws_events(row):
                        await websocket.send_json(event)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
            await reader
