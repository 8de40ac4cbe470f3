"""Identifier helpers: UUID v7 for executions and batches, UUID v5 for deterministic message ids."""

from __future__ import annotations

import hashlib
import os
import time
import uuid

_SLUICE_NS = uuid.UUID("6f1c7f0e-4d2b-5a8e-9c51-5b1d3e0a7c11")
_NS_BYTES = _SLUICE_NS.bytes
_VARIANT = {d: "89ab"[int(d, 16) & 0x3] for d in "0123456789abcdef"}


def uuid7(ms: int | None = None, rand: int | None = None) -> uuid.UUID:
    """Time-ordered UUID (RFC 9562 v7): execution ids sort by creation, which storage listings exploit.
    Workflows pass their own clock and random bits (`workflow.now()`, `workflow.random()`)."""
    ms = time.time_ns() // 1_000_000 if ms is None else ms
    rand = int.from_bytes(os.urandom(10), "big") if rand is None else rand
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return uuid.UUID(int=value)


def derived_id(*parts: object) -> str:
    """Deterministic id from its parts, so a retried activity re-derives the same message ids.

    `str(uuid.uuid5(_SLUICE_NS, name))`, computed without the UUID object: every message of a
    fan-out or a replay derives one, and the object cost more than the hash."""
    h = hashlib.sha1(_NS_BYTES + "/".join(map(str, parts)).encode()).hexdigest()
    # Version 5 in the 13th hex digit, the RFC 4122 variant in the top bits of the 17th.
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


class ClusteredIds:
    """Deterministic ids that sort with their anchor (an execution or a replay batch, themselves
    UUIDv7s): UUIDv7s whose timestamp is the anchor's and whose other 74 bits hash the anchor and
    the parts.

    Lineage is keyed by message id. Random ids (`derived_id`) put every insert on its own page of
    that index, and a transaction then writes as many pages as it has rows: 10,000 replayed
    messages cost SQLite 0.14 s of CPU against 0.06 s for ids that share their anchor's prefix, in
    a table of 250,000 rows. The version nibble (7, not 5) keeps them apart from `derived_id`s."""

    def __init__(self, anchor: str):
        parsed = parse_uuid(anchor)
        ms = (
            parsed.int >> 80
            if parsed is not None
            else int(hashlib.sha1(anchor.encode()).hexdigest()[:12], 16)
        )
        head = f"{ms:012x}"
        self._head = f"{head[:8]}-{head[8:]}-7"
        self._salted = hashlib.sha1(_NS_BYTES + anchor.encode() + b"/")  # copied per id: cheaper

    def id(self, *parts: object) -> str:
        digest = self._salted.copy()
        only = parts[0] if len(parts) == 1 else None
        digest.update((only if isinstance(only, str) else "/".join(map(str, parts))).encode())
        h = digest.hexdigest()
        return f"{self._head}{h[:3]}-{_VARIANT[h[3]]}{h[4:7]}-{h[7:19]}"


def parse_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None
