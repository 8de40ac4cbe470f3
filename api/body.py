"""Read a pipeline YAML from a request: raw `application/yaml` or JSON `{"yaml": "..."}`."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from pydantic import ValidationError

from sluice.api.schemas import ConfigYamlBody
from sluice.errors import InvalidArgumentError, SluiceError

MAX_BODY = 1_048_576
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain")


class UnsupportedMediaType(SluiceError):
    status_code = 415
    error_code = "UNSUPPORTED_MEDIA_TYPE"


class PayloadTooLarge(SluiceError):
    status_code = 413
    error_code = "PAYLOAD_TOO_LARGE"


async def read_yaml_body(request: Request) -> str:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise PayloadTooLarge(f"config body exceeds {MAX_BODY} bytes")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in YAML_TYPES:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidArgumentError("config body is not UTF-8 text") from None
    if ctype == "application/json" or ctype.endswith("+json"):
        try:
            data = json.loads(raw or b"null")
        except json.JSONDecodeError as exc:
            raise InvalidArgumentError(
                f"body is not valid JSON: {exc.msg}", error_code="INVALID_JSON"
            ) from None
        try:
            return ConfigYamlBody.model_validate(data).yaml
        except ValidationError as exc:
            raise InvalidArgumentError(
                'JSON body must be {"yaml": "<pipeline YAML>"}: ' + "; ".join(e["msg"] for e in exc.errors()),
                error_code="INVALID_BODY",
            ) from None
    raise UnsupportedMediaType(
        f"unsupported Content-Type {ctype or '(none)'!r}: send application/yaml or application/json"
    )


YAML_BODY_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/yaml": {"schema": {"type": "string"}},
            "application/json": {"schema": ConfigYamlBody.model_json_schema()},
        },
    }
}
