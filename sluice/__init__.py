"""Sluice: pipeline orchestration on Temporal."""

from sluice.errors import NonRetryableHandlerError
from sluice.messages import Message, MessageMetadata

__version__ = "0.1.0"

__all__ = ["Message", "MessageMetadata", "NonRetryableHandlerError", "__version__"]
