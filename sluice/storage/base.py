"""The storage interface every backend implements."""

from __future__ import annotations

import abc
import asyncio
import json
from collections.abc import AsyncIterator, Callable

from sluice.storage.keys import is_sidecar, validate_key

LIST_PAGE = 1000  # keys per page of `list_proven_pages` (an S3 listing's page)


class StorageError(Exception):
    """A backend failed (I/O, network, credentials)."""


class StorageKeyError(StorageError, ValueError):
    """A key that would escape its prefix or is otherwise unusable."""


class ObjectNotFoundError(StorageError, KeyError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        return f"object not found: {self.key}"


class ObjectStorage(abc.ABC):
    """Flat key/value objects with '/'-separated keys, like S3."""

    url: str

    @abc.abstractmethod
    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...

    @abc.abstractmethod
    async def get(self, key: str) -> bytes:
        """Raise ObjectNotFoundError when the key does not exist."""

    @abc.abstractmethod
    async def exists(self, key: str) -> bool: ...

    async def exists_many(self, keys: list[str]) -> list[bool]:
        """Existence of several keys (backends batch it where they can)."""
        return list(await asyncio.gather(*(self.exists(k) for k in keys)))

    @abc.abstractmethod
    async def delete(self, key: str) -> None: ...

    async def put_with_sidecar(
        self, key: str, data: bytes, content_type: str, sidecar: str, meta: bytes, sha256: str
    ) -> bytes | None:
        """Write an object, then its sidecar (so a sidecar never points at a partial object).

        When the sidecar already records `sha256` and the object exists (a retried batch), nothing
        is written and the stored sidecar's bytes are returned; None when this call wrote both.
        Backends override it to do the whole exchange in one round trip where they can.
        """
        try:
            existing = await self.get(sidecar)
        except ObjectNotFoundError:
            existing = None
        if existing is not None and sidecar_records(existing, sha256) and await self.exists(key):
            return existing
        await self.put(key, data, content_type)
        await self.put(sidecar, meta, "application/json")
        return None

    async def get_range(self, key: str, start: int, length: int) -> bytes:
        """`length` bytes from `start` (fewer at the end): previews read the head of big objects."""
        return (await self.get(key))[start : start + length]

    async def size(self, key: str) -> int:
        return len(await self.get(key))

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every object under `prefix` (a directory-like prefix ending in `/`); returns how
        many, `.meta.json` sidecars not counted. Backends override it with batch deletes."""
        keys = [key async for key in self.list(prefix)]
        for key in keys:
            await self.delete(key)
        return sum(1 for key in keys if not is_sidecar(key))

    async def copy(self, source: str, target: str, content_type: str = "application/octet-stream") -> None:
        """Copy one object (backends override this with a server-side or file-level copy)."""
        await self.put(target, await self.get(source), content_type)

    @abc.abstractmethod
    def list(self, prefix: str) -> AsyncIterator[str]:
        """Yield every key under prefix, sorted, page by page: never the whole listing in memory."""

    async def list_proven_pages(self, prefix: str) -> AsyncIterator[list[tuple[str, bool]]]:
        """`list` in pages of up to `LIST_PAGE` keys, each with whether the listing itself proves
        the object exists (False: ask `exists_many`). An object store lists objects; a local
        symlink may point nowhere. Pages, not keys: a replay of 100,000 objects checks and
        publishes them a page at a time."""
        page: list[tuple[str, bool]] = []
        async for key in self.list(prefix):
            page.append((key, True))
            if len(page) >= LIST_PAGE:
                yield page
                page = []
        if page:
            yield page

    async def any_key(self, prefix: str, accept: Callable[[str], bool]) -> bool:
        """Whether a key under prefix passes `accept`, as `list_proven_pages` would list it (a
        listed symlink counts), stopping at the first. Backends whose listing costs a sort
        override it."""
        async for page in self.list_proven_pages(prefix):
            if any(accept(key) for key, _ in page):
                return True
        return False

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    async def __aenter__(self) -> ObjectStorage:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @staticmethod
    def check_key(key: str) -> str:
        return validate_key(key)


def sidecar_records(sidecar: bytes, sha256: str) -> bool:
    """Whether a stored sidecar records this digest (cheap: no model, no full parse needed)."""
    try:
        return json.loads(sidecar).get("sha256") == sha256
    except (ValueError, AttributeError):
        return False
