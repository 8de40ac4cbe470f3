"""Stored objects as rows and columns: the one decoder behind previews, profiles, dry runs and
row counts.

Formats by extension, then content type: JSON (an object is one row, an array of objects many),
JSON Lines, CSV (quoted newlines allowed), Parquet, and text (one `line` column). Anything else is
not tabular. Everything decodes to a `pyarrow.Table`: Arrow is the one columnar engine here, for
reading (streaming CSV, Parquet row groups, byte ranges) and for profiling (`pyarrow.compute`) on
the same memory, with no second engine to convert into.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

Format = Literal["json", "jsonl", "csv", "parquet", "text"]

EXTENSIONS: dict[str, Format] = {
    "json": "json",
    "jsonl": "jsonl",
    "ndjson": "jsonl",
    "csv": "csv",
    "parquet": "parquet",
    "pq": "parquet",
    "txt": "text",
    "text": "text",
    "md": "text",
    "log": "text",
}
CONTENT_TYPES: dict[str, Format] = {
    "application/json": "json",
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "application/json-lines": "jsonl",
    "text/csv": "csv",
    "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet",
    "application/parquet": "parquet",
}
HEAD_BYTES = 256 * 1024  # what a preview reads of a big line-based object
WHOLE_JSON_LIMIT = 32 * 1024 * 1024  # a JSON document is parsed whole, up to this size


class NotTabular(ValueError):
    """The object cannot be read as rows (unknown format, or content that does not parse)."""


def format_of(key: str, content_type: str | None = None) -> Format | None:
    name = key.rsplit("/", 1)[-1]
    if "." in name:
        found = EXTENSIONS.get(name.rsplit(".", 1)[-1].lower())
        if found:
            return found
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind in CONTENT_TYPES:
        return CONTENT_TYPES[kind]
    if kind.startswith("text/"):
        return "text"
    return None


def decode(data: bytes, fmt: Format, *, truncated: bool = False) -> pa.Table:
    """The rows of an object's bytes. `truncated`: `data` is only the head of the object, so a
    last, partial record is dropped (line-based formats only)."""
    try:
        if fmt == "parquet":
            return pq.read_table(io.BytesIO(data))
        if fmt == "json":
            return _from_json_value(json.loads(data))
        if fmt == "jsonl":
            lines = _complete_lines(data, truncated)
            return _rows_table([_as_row(json.loads(line)) for line in lines if line.strip()])
        if fmt == "text":
            lines = _complete_lines(data, truncated)
            return pa.table(
                {"line": pa.array([line.decode("utf-8", "replace") for line in lines], pa.string())}
            )
        if fmt == "csv":
            return _csv(data, truncated)
    except (ValueError, pa.ArrowException, UnicodeDecodeError) as exc:
        raise NotTabular(f"cannot read as {fmt}: {exc}") from exc
    raise NotTabular(f"unknown format {fmt}")


def count_rows(data: bytes, fmt: Format) -> int:
    """Rows in a whole object, cheaply where the format allows (Parquet metadata, line counts)."""
    if fmt == "parquet":
        return pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
    if fmt in ("text", "jsonl"):
        return sum(1 for line in data.splitlines() if line.strip())
    if fmt == "json":  # a count needs no Arrow table: one row per object, as decode() reads it
        try:
            value = json.loads(data)
        except ValueError as exc:
            raise NotTabular(f"cannot read as json: {exc}") from exc
        if isinstance(value, dict):
            return 1
        if isinstance(value, list):
            return len(value)
        raise NotTabular("a JSON scalar is not rows")
    return decode(data, fmt).num_rows


async def read_head(
    fetch: Callable[[int, int], Awaitable[bytes]], size: int, fmt: Format, limit: int
) -> pa.Table:
    """At most `limit` rows from the start of an object, reading no more of it than needed:
    a byte range for line-based formats, the footer and first row group for Parquet."""
    if fmt == "parquet":
        loop = asyncio.get_running_loop()

        def first_rows() -> pa.Table:
            source = _RangeFile(
                size, lambda start, n: asyncio.run_coroutine_threadsafe(fetch(start, n), loop).result()
            )
            parquet = pq.ParquetFile(source, pre_buffer=False)
            if parquet.metadata.num_row_groups == 0:
                return parquet.schema_arrow.empty_table()
            tables, rows = [], 0
            for group in range(parquet.metadata.num_row_groups):  # only as many groups as needed
                tables.append(parquet.read_row_group(group))
                rows += tables[-1].num_rows
                if rows >= limit:
                    break
            return pa.concat_tables(tables).slice(0, limit)

        try:
            return await asyncio.to_thread(first_rows)
        except (ValueError, OSError, pa.ArrowException) as exc:
            raise NotTabular(f"cannot read as parquet: {exc}") from exc
    if fmt == "json":
        if size > WHOLE_JSON_LIMIT:
            raise NotTabular(f"a JSON document of {size} bytes is too large to preview; write JSON Lines")
        return decode(await fetch(0, size), fmt).slice(0, limit)
    length = min(size, HEAD_BYTES)
    while True:
        head = await fetch(0, length)
        truncated = len(head) < size
        table = decode(head, fmt, truncated=truncated)
        if table.num_rows >= limit or not truncated:
            return table.slice(0, limit)
        length = min(size, max(len(head) * 4, HEAD_BYTES))  # long rows: read more of the head


def objects_table(objects: list[dict[str, Any]]) -> pa.Table:
    """What is not tabular is listed as objects."""
    return _rows_table([{k: o.get(k) for k in ("key", "content_type", "size")} for o in objects])


def to_rows(table: pa.Table) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns and JSON-ready rows (dates and decimals become strings, bytes become text)."""
    rows = [{k: _jsonable(v) for k, v in row.items()} for row in table.to_pylist()]
    return table.column_names, rows


def concat(tables: list[pa.Table]) -> pa.Table:
    """Tables of different shapes (objects of one route need not agree) as one, columns united."""
    tables = [t for t in tables if t.num_columns]
    if not tables:
        return pa.table({})
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowException, ValueError):
        return _rows_table([row for t in tables for row in t.to_pylist()])


# -- helpers -----------------------------------------------------------------------------------
def _complete_lines(data: bytes, truncated: bool) -> list[bytes]:
    lines = data.splitlines()
    if truncated and lines and not data.endswith((b"\n", b"\r")):
        lines = lines[:-1]
    return lines


def _as_row(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {"value": value}


def _from_json_value(value: Any) -> pa.Table:
    if isinstance(value, dict):
        return _rows_table([value])
    if isinstance(value, list):
        return _rows_table([_as_row(v) for v in value])
    raise NotTabular("a JSON scalar is not rows")


def _rows_table(rows: list[dict[str, Any]]) -> pa.Table:
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    arrays = {}
    for name in columns:
        values = [row.get(name) for row in rows]
        try:
            arrays[name] = pa.array(values)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            # Mixed types in one column: keep every value, as text.
            arrays[name] = pa.array(
                [
                    None if v is None else v if isinstance(v, str) else json.dumps(v, default=str)
                    for v in values
                ],
                pa.string(),
            )
    return pa.table(arrays) if arrays else pa.table({})


def _csv(data: bytes, truncated: bool) -> pa.Table:
    if truncated:
        data = _complete_csv(data)
    if not data.strip():
        return pa.table({})
    return pa_csv.read_csv(
        io.BytesIO(data),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(strings_can_be_null=True),  # an empty field is null
    )


def _complete_csv(data: bytes) -> bytes:
    """The head of a CSV cut after its last complete record (quoted newlines respected): the
    last record read may be cut short, so it goes."""
    text = data.decode("utf-8", "replace")
    offsets: list[int] = []
    ends: list[int] = []
    try:
        for _ in csv.reader(_LineTracker(io.StringIO(text, newline=""), offsets)):
            ends.append(offsets[-1])
    except csv.Error:
        pass
    cut = ends[-2] if len(ends) >= 2 else 0
    return text[:cut].encode("utf-8")


class _LineTracker:
    """Feeds csv.reader line by line, noting the text offset after each line."""

    def __init__(self, stream: io.StringIO, offsets: list[int]):
        self.stream, self.offsets = stream, offsets

    def __iter__(self) -> _LineTracker:
        return self

    def __next__(self) -> str:
        line = self.stream.readline()
        if not line:
            raise StopIteration
        self.offsets.append(self.stream.tell())
        return line


class _RangeFile(io.RawIOBase):
    """A read-only, seekable file over byte ranges of a stored object (for Parquet's footer)."""

    def __init__(self, size: int, fetch: Callable[[int, int], bytes]):
        self._size, self._fetch, self._pos = size, fetch, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(base + offset, 0)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._pos >= self._size or not len(view):
            return 0
        data = self._fetch(self._pos, min(len(view), self._size - self._pos))
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)
