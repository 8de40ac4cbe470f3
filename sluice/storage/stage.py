"""Stage objects and their `.meta.json` sidecars."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic_core import to_json

from sluice.storage.base import ObjectNotFoundError, ObjectStorage
from sluice.storage.keys import sidecar_key


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow")

    key: str
    execution_id: str
    stage: str
    route: str
    correlation_id: str | None = None
    parent_correlation_id: str | None = None
    replay_batch_id: str | None = None
    content_type: str
    size: int
    sha256: str
    created_at: datetime
    config_hash: str | None = None
    worker: str | None = None


async def read_meta(storage: ObjectStorage, key: str) -> ObjectMeta | None:
    try:
        raw = await storage.get(sidecar_key(key))
    except ObjectNotFoundError:
        return None
    try:
        return ObjectMeta.model_validate_json(raw)
    except ValueError:
        return None


async def write_stage_object(
    storage: ObjectStorage, key: str, data: bytes, content_type: str, meta: dict[str, Any]
) -> tuple[dict[str, Any], bool]:
    """Write the object then its sidecar; return (the sidecar's fields, written).

    Idempotent: when the sidecar already records the same bytes (a retried activity), nothing is
    rewritten and the original created_at survives. The sidecar is written last, so a sidecar
    never points at a missing or partial object. The sidecar is built as a dict in ObjectMeta's
    shape (read back with `read_meta`): a fan-out writes thousands of them.
    """
    digest = hashlib.sha256(data).hexdigest()
    fields = {
        "key": key,
        **meta,
        "content_type": content_type,
        "size": len(data),
        "sha256": digest,
        "created_at": datetime.now(UTC),
    }
    existing = await storage.put_with_sidecar(
        key, data, content_type, sidecar_key(key), to_json(fields, indent=2), digest
    )
    if existing is None:
        return fields, True
    return json.loads(existing), False


def encode_data(data: bytes | str | dict | list, content_type: str | None) -> tuple[bytes, str]:
    """Bytes pass through; str is UTF-8 text; dicts and lists become JSON."""
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data), content_type or "application/octet-stream"
    if isinstance(data, str):
        return data.encode("utf-8"), content_type or "text/plain; charset=utf-8"
    if isinstance(data, dict | list):
        return json.dumps(data, ensure_ascii=False).encode("utf-8"), content_type or "application/json"
    raise TypeError(f"cannot store {type(data).__name__}: pass bytes, str, dict or list")
