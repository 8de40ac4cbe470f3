"""Resolve `handler:` strings: a built-in name or `package.module:function`."""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sluice.errors import HandlerImportError
from sluice.settings import Settings

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


@dataclass(frozen=True)
class HandlerPolicy:
    """Which modules may hold handlers. Built-ins are always allowed; the standard library never."""

    allowed: tuple[str, ...] = ()  # module prefixes (SLUICE_HANDLER_MODULES); empty: see below
    builtins_only: bool = False  # auth on and no allow-list: nothing but the built-ins runs

    def problem(self, module: str, spec: str, *, defined_in: bool = False) -> HandlerImportError | None:
        """Why `module` may not hold a handler (None: it may). `defined_in`: the function's own
        `__module__`, so an allowed module cannot re-export e.g. `os.system`."""
        what = f"handler {spec!r} is defined in {module!r}" if defined_in else f"handler module {module!r}"
        if module.split(".")[0] in sys.stdlib_module_names:
            return HandlerImportError(
                "E305",
                f"{what}, part of the Python standard library: standard-library functions are never handlers",
                "point the handler at a function in your own package",
            )
        if self.builtins_only:
            return HandlerImportError(
                "E304",
                f"{what}: with authentication on and no SLUICE_HANDLER_MODULES, only built-ins run",
                "set SLUICE_HANDLER_MODULES to your handler packages on the API and the workers",
            )
        if self.allowed and not any(module == p or module.startswith(p + ".") for p in self.allowed):
            return HandlerImportError(
                "E304",
                f"{what}, not allowed on this deployment",
                f"use a built-in or a module under: {', '.join(self.allowed)} (SLUICE_HANDLER_MODULES)",
            )
        return None


_policy = HandlerPolicy()


def configure_handlers(settings: Settings) -> None:
    """Where handler modules are found and which may run (the API, the workers and the CLI)."""
    global _policy
    add_import_paths(settings.handler_paths)
    prefixes = settings.handler_module_prefixes
    _policy = HandlerPolicy(allowed=prefixes, builtins_only=settings.auth != "none" and not prefixes)


def add_import_paths(paths: str) -> None:
    """Append (never prepend): a user's folder must not shadow installed packages."""
    for path in filter(None, paths.split(os.pathsep)):
        if path not in sys.path:
            sys.path.append(path)


def check_handler(spec: str) -> tuple[str, str]:
    """Syntax and policy, without importing anything: what the API can check itself."""
    target = BUILTINS.get(spec, spec)
    if not _SPEC.match(target):
        raise HandlerImportError(
            "E301",
            f"handler {spec!r} is neither a built-in nor of the form 'package.module:function'",
            f"use one of the built-ins ({', '.join(sorted(BUILTINS))}) or 'package.module:function'",
        )
    module_name, attr_path = target.split(":", 1)
    if spec not in BUILTINS:
        problem = _policy.problem(module_name, spec)
        if problem is not None:
            raise problem
    return module_name, attr_path


def resolve_handler(spec: str) -> Handler:
    """Import and check a handler (workers only: importing runs the module's code)."""
    module_name, attr_path = check_handler(spec)
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
    if spec not in BUILTINS:
        problem = _policy.problem(getattr(obj, "__module__", None) or "builtins", spec, defined_in=True)
        if problem is not None:
            raise problem
    if not _takes_message_and_ctx(obj):
        raise HandlerImportError(
            "E303",
            f"handler {spec!r} must accept (message, ctx)",
            "change the signature to `async def handle(message, ctx)`",
        )
    return obj


def _takes_message_and_ctx(handler: Any) -> bool:
    """Whether the handler's signature takes two positional arguments (remembered per function:
    every batch resolves its handler, and reading a signature costs more than a small batch)."""
    try:
        return _signature_check(handler)
    except TypeError:  # an unhashable callable: checked each time
        return _signature_check.__wrapped__(handler)


@functools.lru_cache(maxsize=256)
def _signature_check(handler: Any) -> bool:
    try:
        params = inspect.signature(handler).parameters
    except (TypeError, ValueError):
        return True
    positional = [
        p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in positional)
