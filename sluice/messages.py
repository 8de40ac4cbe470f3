"""The message envelope that flows along route edges.

Only small payloads travel in messages: object bytes stay in storage and messages carry their
`object_key`, which keeps Temporal history far below its payload and size limits.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


# Only keys are worth pydantic-core's string cache: every message carries its own unique ids, which
# only churned the cache (half the cost of reading a page of messages back).
class MessageMetadata(BaseModel):
    model_config = ConfigDict(extra="allow", cache_strings="keys")

    execution_id: str
    correlation_id: str
    parent_correlation_id: str | None = None
    replay_batch_id: str | None = None
    source_route: str | None = Field(default=None, description="Route that emitted the message")


class Message(BaseModel):
    model_config = ConfigDict(cache_strings="keys")

    payload: dict[str, Any] = Field(default_factory=dict)
    metadata: MessageMetadata

    @property
    def object_key(self) -> str | None:
        key = self.payload.get("object_key")
        return key if isinstance(key, str) else None
