"""Every error leaves the API as an ErrorResponse: domain errors, HTTP errors, validation errors
and unexpected exceptions (logged with their correlation id, never shown as a traceback)."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sluice.errors import SluiceError
from sluice.logcontext import correlation_id_var

log = logging.getLogger("sluice.api")
HEADER = "X-Correlation-ID"

_HTTP_CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "ALREADY_EXISTS",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    503: "UNAVAILABLE",
}


class CorrelationIdMiddleware:
    """Pure ASGI (streams stay unbuffered): take X-Correlation-ID or make one, echo it back."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(HEADER.lower().encode())
        value = incoming.decode("latin-1")[:128] if incoming else str(uuid.uuid4())
        token = correlation_id_var.set(value)

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((HEADER.lower().encode(), value.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_header)
        finally:
            correlation_id_var.reset(token)


def error_body(detail: str, error_code: str | None, **extra: Any) -> dict[str, Any]:
    return {
        "detail": detail,
        "error_code": error_code,
        "correlation_id": correlation_id_var.get(),
        "timestamp": datetime.now(UTC).isoformat(),
        **extra,
    }


def error_response(
    status_code: int, detail: str, error_code: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An ErrorResponse for code that answers before routing (middleware, WebSocket handshakes)."""
    return JSONResponse(status_code=status_code, content=error_body(detail, error_code), headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SluiceError)
    async def _domain(_: Request, exc: SluiceError) -> JSONResponse:
        return JSONResponse(
            status_code=exc.status_code,
            content=jsonable_encoder(error_body(exc.detail, exc.error_code, **exc.extra)),
            headers=exc.headers,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return JSONResponse(
            status_code=exc.status_code,
            content=error_body(detail, _HTTP_CODES.get(exc.status_code, f"HTTP_{exc.status_code}")),
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's HTTPValidationError shape (detail is a list), plus the ErrorResponse fields.
        errors = [
            {k: v for k, v in err.items() if k in ("loc", "msg", "type", "input", "ctx")}
            for err in exc.errors()
        ]
        body = error_body("", "VALIDATION_ERROR")
        body["detail"] = errors
        return JSONResponse(status_code=422, content=jsonable_encoder(body, custom_encoder={Exception: str}))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error (correlation id %s)", correlation_id_var.get())
        return JSONResponse(
            status_code=500,
            content=error_body("internal error; quote the correlation_id when reporting it", "INTERNAL"),
        )
