"""Request bodies: only declared content types, bounded size, and the pipeline YAML reader.

`BodyGuard` runs before routing, so no endpoint can forget it: a body in any other content type
gets 415 (a browser's cross-site "simple request", e.g. `text/plain`, never reaches a handler), a
body over the limit gets 413, whether it announced its length or streamed it.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sluice.api.errors import error_response
from sluice.api.schemas import ConfigYamlBody
from sluice.errors import InvalidArgumentError

MAX_BODY = 1_048_576
JSON_TYPE = "application/json"
YAML_TYPES = ("application/yaml", "application/x-yaml")
ACCEPTED_TYPES = (JSON_TYPE, *YAML_TYPES)


def media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


class BodyTooLarge(Exception):
    pass


class BodyGuard:
    """Pure ASGI (streams stay unbuffered)."""

    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY):
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers") or []}
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await error_response(413, f"request body exceeds {self.max_body} bytes", "PAYLOAD_TOO_LARGE")(
                scope, receive, send
            )
            return
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        has_body = chunked or (length is not None and int(length) > 0)
        ctype = media_type(headers.get("content-type", ""))
        if has_body and ctype not in ACCEPTED_TYPES:
            await error_response(
                415,
                f"unsupported Content-Type {ctype or '(none)'!r}: send {', '.join(ACCEPTED_TYPES)}",
                "UNSUPPORTED_MEDIA_TYPE",
            )(scope, receive, send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await error_response(413, f"request body exceeds {self.max_body} bytes", "PAYLOAD_TOO_LARGE")(
                    scope, receive, send
                )


async def read_yaml_body(request: Request) -> str:
    """The YAML of `application/yaml` (or `application/x-yaml`), or of JSON `{"yaml": "..."}`."""
    raw = await request.body()
    ctype = media_type(request.headers.get("content-type", ""))
    if ctype in YAML_TYPES:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidArgumentError("config body is not UTF-8 text") from None
    try:
        data = json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(
            f"body is not valid JSON: {getattr(exc, 'msg', exc)}", error_code="INVALID_JSON"
        ) from None
    try:
        return ConfigYamlBody.model_validate(data).yaml
    except ValidationError as exc:
        raise InvalidArgumentError(
            'JSON body must be {"yaml": "<pipeline YAML>"}: ' + "; ".join(e["msg"] for e in exc.errors()),
            error_code="INVALID_BODY",
        ) from None


YAML_BODY_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/yaml": {"schema": {"type": "string"}},
            "application/json": {"schema": ConfigYamlBody.model_json_schema()},
        },
    }
}
