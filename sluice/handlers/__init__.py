"""Route handlers: the registry that resolves `handler:` strings, the context handlers receive,
and the built-in handlers."""

from sluice.handlers.context import AsyncRouteContext, RouteContext, SyncRouteContext
from sluice.handlers.registry import BUILTINS, HandlerImportError, resolve_handler

__all__ = [
    "BUILTINS",
    "AsyncRouteContext",
    "HandlerImportError",
    "RouteContext",
    "SyncRouteContext",
    "resolve_handler",
]
