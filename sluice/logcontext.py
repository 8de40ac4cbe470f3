"""Python logging, with Sluice's context: which execution, route and correlation id a record is
about, and where a route batch's records are stored.

- `configure_logging(settings)`: the one stderr handler of the API and the worker, as text or as
  JSON lines (`SLUICE_LOG_FORMAT=json`), every line carrying `execution_id`, `route` and
  `correlation_id` when they are known.
- While a batch runs, `batch_context(...)` routes the records that handler code emits through the
  standard `logging` module (`ctx.log`, its own module loggers, the libraries it calls) to the
  batch's stored execution logs, from `SLUICE_HANDLER_LOG_LEVEL` up. Contextvars follow the
  handler into `asyncio.to_thread`, so plain-function handlers are covered too.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass

FIELDS = ("execution_id", "route", "correlation_id")
# Sluice's own machinery and the clients it drives are not a handler's logs.
NOT_HANDLER_LOGS = (
    "sluice.",
    "temporalio",
    "httpx",
    "httpcore",
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "botocore",
    "aiobotocore",
    "urllib3",
    "uvicorn",
)
HANDLER_LOGGER = "sluice.handlers"


@dataclass
class LogContext:
    execution_id: str | None = None
    route: str | None = None
    correlation_id: str | None = None
    sink: Callable[[logging.LogRecord, str | None], None] | None = None  # a batch's log buffer
    threshold: int = logging.DEBUG


current: ContextVar[LogContext | None] = ContextVar("sluice_log_context", default=None)
# The API's request correlation id (X-Correlation-ID), set by its middleware.
correlation_id_var: ContextVar[str | None] = ContextVar("correlation_id", default=None)


@contextmanager
def batch_context(
    execution_id: str,
    route: str,
    sink: Callable[[logging.LogRecord, str | None], None],
    threshold: int,
    correlation_id: str | None = None,
) -> Iterator[LogContext]:
    context = LogContext(execution_id, route, correlation_id, sink, threshold)
    token = current.set(context)
    try:
        yield context
    finally:
        current.reset(token)


class message_context:  # named like the context managers above; a class is cheaper per message
    """Within a batch: the message being handled (its records carry its correlation id).

    A class rather than a generator: it wraps every message a route handles."""

    __slots__ = ("_correlation_id", "_token")

    def __init__(self, correlation_id: str | None) -> None:
        self._correlation_id = correlation_id
        self._token: Token[LogContext | None] | None = None

    def __enter__(self) -> None:
        outer = current.get()
        if outer is not None:
            self._token = current.set(
                LogContext(outer.execution_id, outer.route, self._correlation_id, outer.sink, outer.threshold)
            )

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            current.reset(self._token)


class ContextFilter(logging.Filter):
    """Put execution_id, route and correlation_id on every record (None when unknown)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = current.get()
        for name in FIELDS:
            if getattr(record, name, None) is None:
                value = getattr(context, name, None) if context is not None else None
                if name == "correlation_id" and value is None:
                    value = correlation_id_var.get()
                setattr(record, name, value)
        return True


class BatchCapture(logging.Handler):
    """Hands records emitted inside a batch to that batch's log buffer."""

    def emit(self, record: logging.LogRecord) -> None:
        context = current.get()
        if context is None or context.sink is None or record.levelno < context.threshold:
            return
        if record.name.startswith(NOT_HANDLER_LOGS) and not record.name.startswith(HANDLER_LOGGER):
            return
        try:
            context.sink(record, getattr(record, "correlation_id", None) or context.correlation_id)
        except Exception:  # a log line must never fail the handler that wrote it
            self.handleError(record)


def level_number(name: str) -> int:
    return {
        "debug": logging.DEBUG,
        "info": logging.INFO,
        "warn": logging.WARNING,
        "warning": logging.WARNING,
    }.get(name.lower(), logging.ERROR if name.lower() in ("error", "critical") else logging.INFO)


def install_capture(handler_level: str) -> None:
    """Once per process: batches can collect their records; ctx.log records are created from
    `handler_level` up (Sluice's handler logger), whatever the root level is."""
    root = logging.getLogger()
    if not any(isinstance(h, BatchCapture) for h in root.handlers):
        capture = BatchCapture()
        capture.addFilter(ContextFilter())
        root.addHandler(capture)
    logging.getLogger(HANDLER_LOGGER).setLevel(level_number(handler_level))


def configure_logging(log_format: str = "text", level: str = "info") -> None:
    """The API's and the worker's stderr log: text, or JSON lines with the context fields."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setLevel(level_number(level))
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(execution_id)s %(route)s %(correlation_id)s",
                rename_fields={"asctime": "timestamp", "levelname": "level", "name": "logger"},
                timestamp=False,
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in [h for h in root.handlers if not isinstance(h, BatchCapture)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(min(level_number(level), logging.INFO))
