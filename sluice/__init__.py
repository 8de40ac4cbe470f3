"""Sluice: pipeline orchestration on Temporal.

Handler code imports what it needs from here (`Message`, `MessageMetadata`,
`NonRetryableHandlerError`). The names load on first use: importing the package runs nothing, so
the workflow sandbox, which re-imports `sluice` for the workflow module, never builds a second copy
of the pydantic models that cross workflow history.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Message": "sluice.messages",
    "MessageMetadata": "sluice.messages",
    "NonRetryableHandlerError": "sluice.errors",
}

if TYPE_CHECKING:
    from sluice.errors import NonRetryableHandlerError
    from sluice.messages import Message, MessageMetadata

__all__ = ["Message", "MessageMetadata", "NonRetryableHandlerError", "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sluice' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
