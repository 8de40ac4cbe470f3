"""Local-disk storage: one file per key under a root directory, written atomically.

A write goes to a temporary file under `_sluice/tmp/` (same filesystem, outside every stage), then
is renamed into place. Temporary files are named after their writer (host and pid), so a storage
opened later removes what dead writers of this host left behind: nothing survives a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import shutil
import socket
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

from sluice.storage.base import LIST_PAGE, ObjectNotFoundError, ObjectStorage, StorageError, sidecar_records
from sluice.storage.keys import INTERNAL_ROOT, is_sidecar

T = TypeVar("T")
TMP_DIR = f"{INTERNAL_ROOT}/tmp"
DIR_CACHE = 4096
# Objects up to this size (with their sidecar) are written and read on the event loop: a small
# local file takes less time than handing it to a thread and back.
INLINE_SIZE = 64 * 1024
# Unique temporary names without mkstemp's random retries: writer prefix + a process-wide counter
# started at a random point (two storages of one process share the tmp dir).
_TEMP_NAMES = itertools.count(secrets.randbits(48))


class LocalStorage(ObjectStorage):
    def __init__(self, root: Path):
        self.root = root.resolve()
        self._root = os.fspath(self.root)
        self.url = self.root.as_uri()
        self.tmp = self.root / TMP_DIR
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._writer = f"{socket.gethostname()}-{os.getpid()}-"
        self._dirs: set[str] = set()  # directories known to exist (skips a mkdir per write)
        sweep_dead_writers(self.tmp)

    def _file(self, key: str) -> str:
        # A checked key has no empty, '.' or '..' segment and is relative, so it stays under the
        # root without resolving symlinks (a realpath per write costs more than the write). A
        # string: per-object paths skip building a Path.
        return os.path.join(self._root, self.check_key(key))

    def _path(self, key: str) -> Path:
        return Path(self._file(key))

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        try:
            await _write(len(data), self._put_sync, self._file(key), data)
        except OSError as exc:
            raise StorageError(f"cannot write {key!r}: {exc.strerror or exc}") from exc

    def _temp_name(self) -> str:
        return f"{self.tmp}/{self._writer}{next(_TEMP_NAMES):x}"

    def _put_sync(self, path: Path | str, data: bytes) -> None:
        """Write to a temporary file, then rename it into place (readers never see half a file)."""
        path = os.fspath(path)
        parent = os.path.dirname(path)
        if parent not in self._dirs:
            os.makedirs(parent, exist_ok=True)
            if len(self._dirs) > DIR_CACHE:
                self._dirs.clear()
            self._dirs.add(parent)
        tmp = self._temp_name()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            try:
                os.replace(tmp, path)
            except FileNotFoundError:  # the directory was removed since it was cached
                os.makedirs(parent, exist_ok=True)
                os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    async def put_with_sidecar(
        self, key: str, data: bytes, content_type: str, sidecar: str, meta: bytes, sha256: str
    ) -> bytes | None:
        path, meta_path = self._file(key), self._file(sidecar)
        try:
            return await _write(
                len(data) + len(meta), self._put_pair_sync, path, data, meta_path, meta, sha256
            )
        except OSError as exc:
            raise StorageError(f"cannot write {key!r}: {exc.strerror or exc}") from exc

    def _put_pair_sync(
        self, path: str, data: bytes, meta_path: str, meta: bytes, sha256: str
    ) -> bytes | None:
        try:
            with open(meta_path, "rb") as fh:
                existing: bytes | None = fh.read()
        except (FileNotFoundError, NotADirectoryError):
            existing = None
        if existing is not None and sidecar_records(existing, sha256) and os.path.isfile(path):
            return existing
        self._put_sync(path, data)
        self._put_sync(meta_path, meta)
        return None

    async def delete_prefix(self, prefix: str) -> int:
        if not prefix.endswith("/"):
            return await super().delete_prefix(prefix)
        directory = self._path(prefix.rstrip("/"))

        def remove() -> int:
            if not directory.is_dir():
                return 0
            count = sum(1 for p in directory.rglob("*") if p.is_file() and not is_sidecar(p.name))
            shutil.rmtree(directory, ignore_errors=True)
            return count

        return await asyncio.to_thread(remove)

    async def copy(self, source: str, target: str, content_type: str = "application/octet-stream") -> None:
        src, dst = self._path(source), self._path(target)
        try:
            await asyncio.to_thread(self._copy_sync, src, dst)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFoundError(source) from None
        except OSError as exc:
            raise StorageError(f"cannot copy {source!r} to {target!r}: {exc.strerror or exc}") from exc

    def _copy_sync(self, src: Path, dst: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._temp_name()
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def get(self, key: str) -> bytes:
        path = self._file(key)
        try:
            await asyncio.sleep(0)  # as a small write: a handler reading in a loop lets others run
            data = _read_small(path)
            return data if data is not None else await asyncio.to_thread(Path(path).read_bytes)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFoundError(key) from None

    async def get_range(self, key: str, start: int, length: int) -> bytes:
        path = self._path(key)

        def read() -> bytes:
            with path.open("rb") as fh:
                fh.seek(start)
                return fh.read(length)

        try:
            return await asyncio.to_thread(read)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFoundError(key) from None

    async def size(self, key: str) -> int:
        try:
            return (await asyncio.to_thread(self._path(key).stat)).st_size
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFoundError(key) from None

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._path(key).is_file)

    async def exists_many(self, keys: list[str]) -> list[bool]:
        paths = [self._file(k) for k in keys]
        return await asyncio.to_thread(lambda: [os.path.isfile(p) for p in paths])

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, True)

    async def list(self, prefix: str) -> AsyncIterator[str]:
        async for page in self.list_proven_pages(prefix):
            for key, _ in page:
                yield key

    async def any_key(self, prefix: str, accept: Callable[[str], bool]) -> bool:
        # Unsorted: one key needs no ordered listing (sorting a stage of 10,000 objects and their
        # sidecars took 12-26 ms, on the request path of every replay).
        return await asyncio.to_thread(_any_key, self._root, prefix, accept)

    async def list_proven_pages(self, prefix: str) -> AsyncIterator[list[tuple[str, bool]]]:
        """Keys in S3 order (lexicographic on the full key), one directory listing in memory per
        level. A listed regular file exists; a symlink is proven only by opening it (it may dangle)."""
        root = self._root
        page: list[tuple[str, bool]] = []
        # Keys are built as strings (a pathlib object per entry cost more than the listing).
        try:
            base_dir = _walk_start(prefix)
            stack = [(base_dir, iter(await asyncio.to_thread(_scan_sorted, os.path.join(root, base_dir))))]
        except (FileNotFoundError, NotADirectoryError):
            return
        while stack:
            directory, entries = stack[-1]
            at = f"{directory}/" if directory else ""
            for name, is_dir, is_link in entries:  # resumed where it was left for a subdirectory
                key = at + name
                if is_dir:
                    if _leads_to(key, prefix):
                        try:
                            listing = await asyncio.to_thread(_scan_sorted, os.path.join(root, key))
                        except (FileNotFoundError, NotADirectoryError):
                            continue
                        stack.append((key, iter(listing)))
                        break
                elif _is_listed(key, name, prefix):
                    page.append((key, not is_link))
                    if len(page) >= LIST_PAGE:
                        yield page
                        page = []
            else:
                stack.pop()
        if page:
            yield page


# The walk both listings take: where it starts, which directories it enters, which files it lists.
def _walk_start(prefix: str) -> str:
    return prefix.rsplit("/", 1)[0] if "/" in prefix else ""


def _leads_to(directory_key: str, prefix: str) -> bool:
    return (directory_key + "/").startswith(prefix) or prefix.startswith(directory_key + "/")


def _is_listed(key: str, name: str, prefix: str) -> bool:
    return key.startswith(prefix) and not name.startswith(".tmp-")  # temp files of Sluice <= 0.1


def _any_key(root: str, prefix: str, accept: Callable[[str], bool]) -> bool:
    """`list_proven_pages`' walk, unsorted and stopping at the first accepted key."""
    pending = [_walk_start(prefix)]
    while pending:
        directory = pending.pop()
        try:
            listing = os.scandir(os.path.join(root, directory))
        except (FileNotFoundError, NotADirectoryError):
            continue
        with listing:
            for entry in listing:
                key = f"{directory}/{entry.name}" if directory else entry.name
                if entry.is_dir(follow_symlinks=False):
                    if _leads_to(key, prefix):
                        pending.append(key)
                elif _is_listed(key, entry.name, prefix) and accept(key):
                    return True
    return False


async def _write(size: int, write: Callable[..., T], *args: Any) -> T:
    """Run a synchronous write of `size` bytes: on the event loop when it is small (a small local
    write takes less time than handing it to a thread and back), after one yield that keeps a
    handler writing in a tight loop from starving the loop; in a thread otherwise."""
    if size <= INLINE_SIZE:
        await asyncio.sleep(0)
        return write(*args)
    return await asyncio.to_thread(write, *args)


def _read_small(path: str) -> bytes | None:
    """The file's bytes if it holds at most `INLINE_SIZE` of them; None for a larger one (read it
    in a thread). A directory reads as missing, as `Path.read_bytes` has it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(path)
        if info.st_size > INLINE_SIZE:
            return None
        parts = [os.read(fd, info.st_size + 1)]  # then b"": the end, unless the file grew
        while parts[-1]:
            parts.append(os.read(fd, INLINE_SIZE))
        return b"".join(parts)
    finally:
        os.close(fd)


def sweep_dead_writers(tmp: Path) -> int:
    """Remove temporary files of writers on this host that no longer run (a killed worker)."""
    host = socket.gethostname()
    removed = 0
    for path in tmp.iterdir() if tmp.is_dir() else []:
        writer_host, _, rest = path.name.rpartition("-")[0].rpartition("-")
        pid = rest
        if writer_host != host or not pid.isdigit() or _alive(int(pid)):
            continue
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _scan_sorted(directory: str | Path) -> list[tuple[str, bool, bool]]:
    """(name, is a directory, is a symlink), sorted as their keys sort: a directory counts as `name/`."""
    with os.scandir(directory) as it:
        entries = [(e.name, e.is_dir(follow_symlinks=False), e.is_symlink()) for e in it]
    return sorted(entries, key=lambda e: e[0] + "/" if e[1] else e[0])
