"""OpenAPI `responses` shared by the routers, so every status code the API can send is documented."""

from __future__ import annotations

from typing import Any

from sluice.api.schemas import ErrorResponse, UnprocessableResponse, ValidationErrorResponse

Responses = dict[int | str, dict[str, Any]]


def error(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


AUTH: Responses = {
    401: error("UNAUTHENTICATED: no credential, or an unknown, expired or revoked one"),
    403: error("PERMISSION_DENIED: the credential's role is too small (or LOOPBACK_ONLY without auth)"),
}
UNPROCESSABLE: Responses = {
    422: {"model": UnprocessableResponse, "description": "Invalid parameters (or IDEMPOTENCY_KEY_REUSED)"}
}
NOT_FOUND: Responses = {404: error("Resource not found")}
INVALID_CONFIG: Responses = {
    400: {
        "model": ErrorResponse | ValidationErrorResponse,
        "description": "Invalid body, or an invalid config (then with its full validation report)",
    }
}
BAD_REQUEST: Responses = {400: error("Invalid argument")}
CONFLICT: Responses = {409: error("Conflict (tag in use, execution already finished, name taken)")}
UNAVAILABLE: Responses = {503: error("Temporal not reachable")}
BODY: Responses = {
    413: error("PAYLOAD_TOO_LARGE: the body exceeds 1 MiB"),
    415: error("UNSUPPORTED_MEDIA_TYPE: send application/json, application/yaml or application/x-yaml"),
}
IDEMPOTENT: Responses = UNPROCESSABLE
LOG_EXPORT: Responses = {
    200: {
        "description": "The log as a file: `text` (one line per entry), `jsonl` or `json`",
        "content": {
            "text/plain": {"schema": {"type": "string"}},
            "application/x-ndjson": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
        },
    }
}


def document_body_errors(openapi: dict[str, Any]) -> dict[str, Any]:
    """BodyGuard answers 413/415 for every POST/PUT/PATCH before routing: say so on each of them."""
    for item in openapi.get("paths", {}).values():
        for method, operation in item.items():
            if method in ("post", "put", "patch"):
                for code, spec in BODY.items():
                    operation["responses"].setdefault(
                        str(code),
                        {
                            "description": spec["description"],
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}
                            },
                        },
                    )
    return openapi
