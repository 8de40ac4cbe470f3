"""Resolve `handler:` strings: a built-in name or `package.module:function`."""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from collections.abc import Callable
from typing import Any

from sluice.errors import HandlerImportError

Handler = Callable[..., Any]

BUILTINS: dict[str, str] = {
    "read_files": "sluice.handlers.builtin:read_files",
    "split_text": "sluice.handlers.builtin:split_text",
    "map_json": "sluice.handlers.builtin:map_json",
    "passthrough": "sluice.handlers.builtin:passthrough",
    "noop": "sluice.handlers.builtin:noop",
    "markdown_convert": "sluice.handlers.docs:markdown_convert",
    "markdown_segment": "sluice.handlers.docs:markdown_segment",
    "hash_embed": "sluice.handlers.docs:hash_embed",
    "write_index": "sluice.handlers.docs:write_index",
}

_SPEC = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


_allowed_modules: tuple[str, ...] = ()


def allow_modules(prefixes: str) -> None:
    """Restrict `package.module:function` handlers to these module prefixes (comma list; empty: any).

    Handler strings are code that workers run and the API imports to validate; in production,
    allow only your handler packages (SLUICE_HANDLER_MODULES). Built-ins are always allowed.
    """
    global _allowed_modules
    _allowed_modules = tuple(p.strip().rstrip(".") for p in prefixes.split(",") if p.strip())


def add_import_paths(paths: str) -> None:
    """Append (never prepend): a user's folder must not shadow installed packages."""
    import os

    for path in filter(None, paths.split(os.pathsep)):
        if path not in sys.path:
            sys.path.append(path)


def resolve_handler(spec: str) -> Handler:
    target = BUILTINS.get(spec, spec)
    if not _SPEC.match(target):
        raise HandlerImportError(
            "E301",
            f"handler {spec!r} is neither a built-in nor of the form 'package.module:function'",
            f"use one of the built-ins ({', '.join(sorted(BUILTINS))}) or 'package.module:function'",
        )
    module_name, attr_path = target.split(":", 1)
    if (
        spec not in BUILTINS
        and _allowed_modules
        and not any(module_name == p or module_name.startswith(p + ".") for p in _allowed_modules)
    ):
        raise HandlerImportError(
            "E304",
            f"handler module {module_name!r} is not allowed on this deployment",
            f"use a built-in or a module under: {', '.join(_allowed_modules)} (SLUICE_HANDLER_MODULES)",
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise HandlerImportError(
            "E302",
            f"handler module {module_name!r} cannot be imported: {exc}",
            "install the package on API and worker machines, or add its folder to SLUICE_HANDLER_PATHS",
        ) from None
    except Exception as exc:  # the module itself raised while importing
        raise HandlerImportError(
            "E302",
            f"importing handler module {module_name!r} failed: {type(exc).__name__}: {exc}",
            "fix the error raised by the module at import time",
        ) from None
    obj: Any = module
    for part in attr_path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise HandlerImportError(
                "E303",
                f"module {module_name!r} has no attribute {attr_path!r}",
                f"define `async def {attr_path.split('.')[-1]}(message, ctx)` in {module_name}",
            )
    if not callable(obj):
        raise HandlerImportError(
            "E303",
            f"handler {spec!r} is not callable",
            "point the handler at a function taking (message, ctx)",
        )
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return obj
    positional = [
        p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    if len(positional) < 2 and not any(p.kind == p.VAR_POSITIONAL for p in positional):
        raise HandlerImportError(
            "E303",
            f"handler {spec!r} must accept (message, ctx)",
            "change the signature to `async def handle(message, ctx)`",
        )
    return obj
