"""General-purpose built-in handlers: enough to build a pipeline without writing code."""

from __future__ import annotations

import asyncio
import fnmatch
import json
import mimetypes
from pathlib import Path, PurePosixPath
from typing import Any

from sluice.errors import NonRetryableHandlerError
from sluice.handlers.context import AsyncRouteContext
from sluice.messages import Message


def _option(message: Message, ctx: AsyncRouteContext, name: str, default: Any = None) -> Any:
    """Message payload wins over route params, which win over the default."""
    if name in message.payload:
        return message.payload[name]
    return ctx.params.get(name, default)


def _matches(rel_path: str, pattern: str) -> bool:
    if "/" in pattern:
        return fnmatch.fnmatch(rel_path, pattern) or fnmatch.fnmatch(rel_path, pattern.replace("**/", ""))
    return fnmatch.fnmatch(PurePosixPath(rel_path).name, pattern)


async def read_files(message: Message, ctx: AsyncRouteContext) -> None:
    """Emit every file of a folder (or s3://bucket/prefix) matching `pattern` into this stage.

    Options (payload or params): `source` (required), `pattern` (default '*'), `base_dir`
    (relative `source` paths resolve against it; `sluice run` sets it to the YAML's folder).
    """
    source = _option(message, ctx, "source")
    if not source:
        raise NonRetryableHandlerError("read_files needs a `source` folder or s3:// URL")
    pattern = str(_option(message, ctx, "pattern", "*"))
    count = 0
    roots = ctx.settings.readable_roots
    if str(source).startswith("s3://"):
        from sluice.storage.factory import open_storage

        if not any(_within_location(str(source).rstrip("/"), r) for r in roots if r.startswith("s3://")):
            raise _outside(str(source), roots)
        bucket_storage = open_storage(ctx.settings, str(source))
        try:
            async for key in bucket_storage.list(""):
                if key.endswith(".meta.json") or not _matches(key, pattern):
                    continue
                data = await bucket_storage.get(key)
                await ctx.emit(key, data, _guess_type(key), {"source_path": f"{source.rstrip('/')}/{key}"})
                count += 1
        finally:
            await bucket_storage.close()
    else:
        base_dir = str(_option(message, ctx, "base_dir", "."))
        _root, files = await asyncio.to_thread(_local_files, str(source), base_dir, pattern, roots)
        for path, rel in files:
            data = await asyncio.to_thread(path.read_bytes)
            await ctx.emit(rel, data, _guess_type(rel), {"source_path": str(path)})
            count += 1
    ctx.log.info(f"read {count} file(s) from {source}")
    if count == 0:
        ctx.log.warning(f"no file under {source} matches {pattern!r}")


def _local_files(
    source: str, base_dir: str, pattern: str, roots: list[str]
) -> tuple[Path, list[tuple[Path, str]]]:
    root = Path(source).expanduser()
    if not root.is_absolute():
        root = Path(base_dir) / root
    root = root.resolve()
    allowed = [Path(r) for r in roots if not r.startswith("s3://")]
    if not any(root.is_relative_to(r) for r in allowed):
        raise _outside(str(root), roots)
    if not root.is_dir():
        raise NonRetryableHandlerError(f"read_files source {str(root)!r} is not a folder")
    files = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if any(part.startswith(".") for part in PurePosixPath(rel).parts) or not _matches(rel, pattern):
            continue
        if not any(path.resolve().is_relative_to(r) for r in allowed):
            continue  # a link out of the allowed folders
        files.append((path, rel))
    return root, files


def _within_location(source: str, root: str) -> bool:
    return source == root or source.startswith(root + "/")


def _outside(source: str, roots: list[str]) -> NonRetryableHandlerError:
    return NonRetryableHandlerError(
        f"read_files may only read under SLUICE_READ_ROOTS ({', '.join(roots)}); {source!r} is outside"
    )


def _guess_type(name: str) -> str:
    if name.endswith(".md"):
        return "text/markdown; charset=utf-8"
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


async def split_text(message: Message, ctx: AsyncRouteContext) -> None:
    """Split a text object into chunks: by `separator` (default blank line) or `max_chars`."""
    key = message.object_key
    if not key:
        raise NonRetryableHandlerError("split_text needs a message with an object_key")
    text = await ctx.read_text(key)
    max_chars = int(ctx.params.get("max_chars", 0) or 0)
    if max_chars > 0:
        chunks = [text[i : i + max_chars] for i in range(0, len(text), max_chars)]
    else:
        separator = str(ctx.params.get("separator", "\n\n"))
        chunks = [c for c in text.split(separator)]
    if ctx.params.get("strip", True):
        chunks = [c.strip() for c in chunks]
    chunks = [c for c in chunks if c]
    stem = _relative_path(key, ctx)
    for i, chunk in enumerate(chunks):
        await ctx.emit(f"{stem}/{i:05d}.txt", chunk, payload={"source_key": key, "chunk": i})
    ctx.log.debug(f"{key}: {len(chunks)} chunk(s)")


async def map_json(message: Message, ctx: AsyncRouteContext) -> None:
    """Build JSON from `fields: {out_name: dotted.path}` over the input object (or the payload).

    A JSON array maps element by element. Without `fields` the document passes through.
    """
    key = message.object_key
    if key:
        try:
            source: Any = json.loads(await ctx.read(key))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise NonRetryableHandlerError(f"{key} is not valid JSON: {exc}") from None
    else:
        source = message.payload
    fields = ctx.params.get("fields") or {}
    if not isinstance(fields, dict) or not all(isinstance(v, str) for v in fields.values()):
        raise NonRetryableHandlerError("map_json `fields` must map output names to dotted paths")

    def project(item: Any) -> Any:
        return {out: _dig(item, path) for out, path in fields.items()} if fields else item

    result = [project(item) for item in source] if isinstance(source, list) else project(source)
    if ctx.stage and key:
        await ctx.emit(_relative_path(key, ctx), result, "application/json", payload={"source_key": key})
    elif ctx.stage:
        await ctx.emit(f"{message.metadata.correlation_id}.json", result, "application/json")
    else:
        await ctx.send(result if isinstance(result, dict) else {"value": result})


def _dig(value: Any, path: str) -> Any:
    for part in path.split(".") if path else []:
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


async def passthrough(message: Message, ctx: AsyncRouteContext) -> None:
    """Forward the payload unchanged to every `next` route."""
    await ctx.send(dict(message.payload))


async def noop(message: Message, ctx: AsyncRouteContext) -> None:
    """Do nothing; with `next` set, forward the payload (used by benchmarks)."""
    if ctx.next_routes:
        await ctx.send(dict(message.payload))


def _relative_path(key: str, ctx: AsyncRouteContext) -> str:
    """Path of the input object inside its stage; messages from ctx.emit and replays carry it."""
    path = ctx.message.payload.get("path")
    if isinstance(path, str) and path and key.endswith(path):
        return path
    return key.split("/", 2)[-1]


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)
