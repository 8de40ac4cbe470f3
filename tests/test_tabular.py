"""The decoder on each format: what previews, profiles and row counts read."""

from __future__ import annotations

import asyncio
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sluice.tabular import NotTabular, count_rows, decode, format_of, read_head, to_rows

CSV = b'id,name,note\n1,a,"first line\nsecond line"\n2,b,plain\n3,c,"with, comma"\n'


def test_formats_by_extension_then_content_type() -> None:
    assert (
        format_of("e/s/a.CSV") == "csv"
        and format_of("a.ndjson") == "jsonl"
        and format_of("a.pq") == "parquet"
    )
    assert format_of("e/s/blob", "application/json") == "json"
    assert format_of("e/s/readme", "text/markdown; charset=utf-8") == "text"
    assert format_of("e/s/image.png", "image/png") is None and format_of("e/s/blob") is None


def test_csv_with_quoted_newlines() -> None:
    columns, rows = to_rows(decode(CSV, "csv"))
    assert columns == ["id", "name", "note"]
    assert rows[0] == {"id": 1, "name": "a", "note": "first line\nsecond line"}
    assert [r["note"] for r in rows[1:]] == ["plain", "with, comma"]
    assert count_rows(CSV, "csv") == 3


def test_a_truncated_csv_head_keeps_only_complete_records() -> None:
    cut = CSV.index(b"second line") + 3  # inside the quoted value
    assert decode(CSV[:cut], "csv", truncated=True).num_rows == 0
    cut = CSV.index(b"2,b") + 5  # inside the second record
    assert [r["id"] for r in decode(CSV[:cut], "csv", truncated=True).to_pylist()] == [1]


def test_json_object_array_and_lines() -> None:
    assert decode(b'{"a": 1, "b": "x"}', "json").to_pylist() == [{"a": 1, "b": "x"}]
    assert decode(b'[{"a": 1}, {"b": 2}]', "json").to_pylist() == [{"a": 1, "b": None}, {"a": None, "b": 2}]
    mixed = decode(b'[{"a": 1}, {"a": "x"}]', "json").to_pylist()  # mixed types become text
    assert mixed == [{"a": "1"}, {"a": "x"}]
    lines = b'{"a": 1}\n\n{"a": 2}\n{"a": 3'
    assert decode(lines, "jsonl", truncated=True).column("a").to_pylist() == [1, 2]
    assert count_rows(b'{"a": 1}\n{"a": 2}\n', "jsonl") == 2
    assert count_rows(b'{"a": 1}', "json") == 1 and count_rows(b'[{"a": 1}, 2, "x"]', "json") == 3
    assert count_rows(b"[]", "json") == decode(b"[]", "json").num_rows == 0
    with pytest.raises(NotTabular):
        decode(b"42", "json")
    with pytest.raises(NotTabular):
        decode(b"{not json", "json")


def test_text_is_one_line_column() -> None:
    assert decode(b"one\ntwo\n", "text").to_pylist() == [{"line": "one"}, {"line": "two"}]
    assert count_rows(b"one\n\ntwo", "text") == 2


def _parquet(rows: int, group: int) -> bytes:
    buf = io.BytesIO()
    pq.write_table(
        pa.table({"x": list(range(rows)), "s": [f"v{i}" for i in range(rows)]}), buf, row_group_size=group
    )
    return buf.getvalue()


def test_parquet_whole_and_head_by_ranges() -> None:
    data = _parquet(100_000, 10_000)
    assert decode(data, "parquet").num_rows == 100_000 and count_rows(data, "parquet") == 100_000
    fetched: list[int] = []

    async def fetch(start: int, length: int) -> bytes:
        fetched.append(length)
        return data[start : start + length]

    head = asyncio.run(read_head(fetch, len(data), "parquet", 5))
    assert head.column("x").to_pylist() == [0, 1, 2, 3, 4]
    assert sum(fetched) < len(data) / 3  # the footer and the first row group, not the file


def test_a_big_line_based_object_is_read_by_its_head() -> None:
    data = b"n,t\n" + b"".join(b"%d,row %d\n" % (i, i) for i in range(500_000))
    fetched: list[int] = []

    async def fetch(start: int, length: int) -> bytes:
        fetched.append(length)
        return data[start : start + length]

    head = asyncio.run(read_head(fetch, len(data), "csv", 50))
    assert head.column("n").to_pylist() == list(range(50))
    assert sum(fetched) <= 256 * 1024 < len(data)
