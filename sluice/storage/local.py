"""Local-disk storage: one file per key under a root directory, written atomically."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from sluice.storage.base import ObjectNotFoundError, ObjectStorage, StorageError


class LocalStorage(ObjectStorage):
    def __init__(self, root: Path):
        self.root = root.resolve()
        self.url = self.root.as_uri()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / self.check_key(key)).resolve()
        if self.root not in path.parents:
            raise StorageError(f"key {key!r} escapes the storage root")
        return path

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        await asyncio.to_thread(self._put_sync, self._path(key), data)

    @staticmethod
    def _put_sync(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFoundError(key) from None

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._path(key).is_file)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, True)

    async def list(self, prefix: str) -> AsyncIterator[str]:
        # Walk only the directory the prefix names; the rest of the prefix filters names.
        # Directories are read one at a time, so memory holds one directory listing, not the tree.
        base_dir = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / base_dir if base_dir else self.root
        stack: list[Path] = [start]
        while stack:
            directory = stack.pop()
            try:
                entries = await asyncio.to_thread(_scan_sorted, directory)
            except (FileNotFoundError, NotADirectoryError):
                continue
            subdirs: list[Path] = []
            for name, is_dir in entries:
                path = directory / name
                if is_dir:
                    subdirs.append(path)
                    continue
                if name.startswith(".tmp-"):
                    continue
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield key
            stack.extend(reversed(subdirs))


def _scan_sorted(directory: Path) -> list[tuple[str, bool]]:
    with os.scandir(directory) as it:
        return sorted((e.name, e.is_dir(follow_symlinks=False)) for e in it)
