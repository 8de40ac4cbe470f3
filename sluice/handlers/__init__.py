"""Route handlers: the registry that resolves `handler:` strings, the context handlers receive,
and the built-in handlers."""

from sluice.handlers.context import AsyncRouteContext, RouteContext, SyncRouteContext
from sluice.handlers.registry import BUILTINS, resolve_handler

__all__ = ["BUILTINS", "AsyncRouteContext", "RouteContext", "SyncRouteContext", "resolve_handler"]
