"""Document built-ins for ingest pipelines: HTML/Markdown to Markdown, heading segmentation,
a deterministic local embedding (feature hashing, no model download) and an index writer."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from html import unescape
from html.parser import HTMLParser
from pathlib import PurePosixPath

from sluice.errors import NonRetryableHandlerError
from sluice.handlers.builtin import _relative_path
from sluice.handlers.context import AsyncRouteContext
from sluice.messages import Message

EMBEDDING_MODEL = "sluice-hash-v1"


class _HtmlToMarkdown(HTMLParser):
    _BLOCK = {"p", "div", "section", "article", "header", "footer", "main", "table", "tr", "blockquote"}
    _SKIP = {"script", "style", "head", "nav"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._skip = 0
        self._pre = 0
        self._href: str | None = None
        self._list_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skip += 1
        elif self._skip:
            return
        elif re.fullmatch(r"h[1-6]", tag):
            self.out.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self._BLOCK:
            self.out.append("\n\n")
        elif tag == "br":
            self.out.append("\n")
        elif tag in ("ul", "ol"):
            self._list_depth += 1
            self.out.append("\n")
        elif tag == "li":
            self.out.append("\n" + "  " * max(self._list_depth - 1, 0) + "- ")
        elif tag == "pre":
            self._pre += 1
            self.out.append("\n\n```\n")
        elif tag == "code" and not self._pre:
            self.out.append("`")
        elif tag in ("strong", "b"):
            self.out.append("**")
        elif tag in ("em", "i"):
            self.out.append("*")
        elif tag == "a":
            self._href = dict(attrs).get("href")
            self.out.append("[")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skip = max(self._skip - 1, 0)
        elif self._skip:
            return
        elif re.fullmatch(r"h[1-6]", tag) or tag in self._BLOCK:
            self.out.append("\n\n")
        elif tag in ("ul", "ol"):
            self._list_depth = max(self._list_depth - 1, 0)
            self.out.append("\n")
        elif tag == "pre":
            self._pre = max(self._pre - 1, 0)
            self.out.append("\n```\n\n")
        elif tag == "code" and not self._pre:
            self.out.append("`")
        elif tag in ("strong", "b"):
            self.out.append("**")
        elif tag in ("em", "i"):
            self.out.append("*")
        elif tag == "a":
            self.out.append(f"]({self._href})" if self._href else "]")
            self._href = None

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        self.out.append(data if self._pre else re.sub(r"\s+", " ", data))

    def markdown(self) -> str:
        text = "".join(self.out)
        lines = [line.rstrip() for line in text.splitlines()]
        text = "\n".join(lines)
        text = re.sub(r"\n{3,}", "\n\n", text)
        text = re.sub(r"(?m)^ +(#+ )", r"\1", text)
        return text.strip() + "\n"


def html_to_markdown(html: str) -> str:
    parser = _HtmlToMarkdown()
    parser.feed(html)
    parser.close()
    return unescape(parser.markdown())


async def markdown_convert(message: Message, ctx: AsyncRouteContext) -> None:
    """HTML becomes Markdown; Markdown and text pass through normalised. Writes `{path}.md`."""
    key = message.object_key
    if not key:
        raise NonRetryableHandlerError("markdown_convert needs a message with an object_key")
    raw = (await ctx.read(key)).decode("utf-8", errors="replace")
    rel = _relative_path(key, ctx)
    suffix = PurePosixPath(rel).suffix.lower()
    if suffix in (".html", ".htm") or raw.lstrip().lower().startswith(("<!doctype html", "<html")):
        markdown = html_to_markdown(raw)
    else:
        markdown = raw.replace("\r\n", "\n").strip() + "\n"
    out = str(PurePosixPath(rel).with_suffix(".md"))
    await ctx.emit(out, markdown, "text/markdown; charset=utf-8", payload={"source_key": key})


_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


def segment_markdown(text: str, max_level: int = 3) -> list[tuple[str, str]]:
    """Split at headings of level <= max_level; returns (heading, section text) pairs."""
    sections: list[tuple[str, list[str]]] = []
    heading, buf = "", []
    in_code = False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            in_code = not in_code
        match = None if in_code else _HEADING.match(line)
        if match and len(match.group(1)) <= max_level:
            if heading or any(b.strip() for b in buf):
                sections.append((heading, buf))
            heading, buf = match.group(2).strip(), [line]
        else:
            buf.append(line)
    if heading or any(b.strip() for b in buf):
        sections.append((heading, buf))
    # A heading with nothing under it (an H1 directly followed by an H2) is not a segment.
    return [(h, "\n".join(b).strip() + "\n") for h, b in sections if "\n".join(b[1:] if h else b).strip()]


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:48] or "section"


async def markdown_segment(message: Message, ctx: AsyncRouteContext) -> None:
    """One object per heading section: `{doc path without suffix}/{nnn}-{slug}.md`."""
    key = message.object_key
    if not key:
        raise NonRetryableHandlerError("markdown_segment needs a message with an object_key")
    text = await ctx.read_text(key)
    max_level = int(ctx.params.get("max_level", 3))
    doc = str(PurePosixPath(_relative_path(key, ctx)).with_suffix(""))
    sections = segment_markdown(text, max_level)
    for i, (heading, body) in enumerate(sections):
        await ctx.emit(
            f"{doc}/{i:03d}-{_slug(heading)}.md",
            body,
            "text/markdown; charset=utf-8",
            payload={"source_key": key, "heading": heading, "document": doc, "section": i},
        )
    ctx.log.debug(f"{doc}: {len(sections)} segment(s)")


def hash_embedding(text: str, dim: int = 64) -> list[float]:
    """Signed feature hashing of lower-cased word unigrams and bigrams, L2-normalised."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    grams = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
    vector = [0.0] * dim
    for gram in grams:
        digest = hashlib.blake2b(gram.encode(), digest_size=8).digest()
        value = int.from_bytes(digest, "big")
        vector[value % dim] += 1.0 if (value >> 63) & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vector))
    return [round(v / norm, 6) for v in vector] if norm else vector


async def hash_embed(message: Message, ctx: AsyncRouteContext) -> None:
    """Embed a text object; writes `{path}.json` with the vector and where it came from."""
    key = message.object_key
    if not key:
        raise NonRetryableHandlerError("hash_embed needs a message with an object_key")
    dim = int(ctx.params.get("dim", 64))
    if not 8 <= dim <= 4096:
        raise NonRetryableHandlerError(f"hash_embed dim must be between 8 and 4096, got {dim}")
    text = await ctx.read_text(key)
    rel = _relative_path(key, ctx)
    document = {
        "source_key": key,
        "heading": message.payload.get("heading"),
        "document": message.payload.get("document"),
        "model": EMBEDDING_MODEL,
        "dim": dim,
        "vector": hash_embedding(text, dim),
        "text_sha256": hashlib.sha256(text.encode()).hexdigest(),
    }
    await ctx.emit(str(PurePosixPath(rel).with_suffix(".json")), document, "application/json")


async def write_index(message: Message, ctx: AsyncRouteContext) -> None:
    """Collect every embedding of the execution into `index.jsonl` plus a `manifest.json`.

    Meant for a `collect: true` route: it runs once after its upstream routes are done and lists
    their stages itself, so no message carries the whole set.
    """
    stages = message.payload.get("stages") or ctx.params.get("stages") or []
    if not stages:
        raise NonRetryableHandlerError(
            "write_index needs `stages` to index (set collect: true or params.stages)"
        )
    lines: list[str] = []
    documents: set[str] = set()
    for stage in stages:
        async for key in ctx.list(stage):
            item = await ctx.read_json(key)
            if not isinstance(item, dict) or "vector" not in item:
                continue
            documents.add(str(item.get("document")))
            lines.append(
                json.dumps(
                    {
                        "key": key,
                        "source_key": item.get("source_key"),
                        "document": item.get("document"),
                        "heading": item.get("heading"),
                        "vector": item["vector"],
                    },
                    ensure_ascii=False,
                )
            )
    await ctx.emit("index.jsonl", "\n".join(lines) + ("\n" if lines else ""), "application/x-ndjson")
    manifest = {
        "entries": len(lines),
        "documents": sorted(documents),
        "model": EMBEDDING_MODEL,
        "stages": stages,
    }
    await ctx.emit("manifest.json", manifest, "application/json")
    ctx.rows(len(lines))
    ctx.log.info(f"indexed {len(lines)} segment(s) from {len(documents)} document(s)")
