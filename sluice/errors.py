"""Domain errors shared by the service layer, the API and the workers.

The service layer raises these; the API maps them onto ErrorResponse bodies, so a router never
invents a status code of its own.
"""

from __future__ import annotations

from typing import Any


class SluiceError(Exception):
    status_code = 500
    error_code = "INTERNAL"
    headers: dict[str, str] | None = None

    def __init__(self, detail: str, *, error_code: str | None = None, extra: dict[str, Any] | None = None):
        super().__init__(detail)
        self.detail = detail
        if error_code:
            self.error_code = error_code
        self.extra = extra or {}


class InvalidArgumentError(SluiceError):
    status_code = 400
    error_code = "INVALID_ARGUMENT"


class UnauthenticatedError(SluiceError):
    """No credential, or one that is unknown, expired, revoked or badly signed."""

    status_code = 401
    error_code = "UNAUTHENTICATED"
    headers = {"WWW-Authenticate": 'Bearer realm="sluice"'}


class PermissionDeniedError(SluiceError):
    """A valid credential whose role is too small for the operation."""

    status_code = 403
    error_code = "PERMISSION_DENIED"


class NotFoundError(SluiceError):
    status_code = 404
    error_code = "NOT_FOUND"


class AlreadyExistsError(SluiceError):
    status_code = 409
    error_code = "ALREADY_EXISTS"


class FailedPreconditionError(SluiceError):
    status_code = 409
    error_code = "FAILED_PRECONDITION"


class IdempotencyKeyReusedError(SluiceError):
    status_code = 422
    error_code = "IDEMPOTENCY_KEY_REUSED"


class UnavailableError(SluiceError):
    status_code = 503
    error_code = "UNAVAILABLE"


class DeadlineExceededError(SluiceError):
    """504: the work did not finish within its time bound (what did finish is in the body)."""

    status_code = 504


class ConfigInvalidError(SluiceError):
    """Carries the validation report so the API can return it with the 400."""

    status_code = 400
    error_code = "CONFIG_INVALID"


class NonRetryableHandlerError(Exception):
    """Raise from a handler to fail its route at once instead of retrying."""


class HandlerUsageError(Exception):
    """A handler used the context wrongly (no stage, oversized payload, unknown target)."""


class HandlerImportError(Exception):
    """Why a handler string does not resolve; `code` is the validation code it maps to."""

    def __init__(self, code: str, message: str, suggestion: str):
        super().__init__(message)
        self.code = code
        self.message = message
        self.suggestion = suggestion


# A route batch failing with one of these fails the route at once: retrying cannot help. The
# activity raises them as ApplicationError(type=<class name>), the workflow's retry policy lists
# the same names.
NON_RETRYABLE_HANDLER_ERRORS: tuple[type[Exception], ...] = (
    NonRetryableHandlerError,
    HandlerUsageError,
    HandlerImportError,
)
NON_RETRYABLE_ERROR_TYPES = [cls.__name__ for cls in NON_RETRYABLE_HANDLER_ERRORS]
