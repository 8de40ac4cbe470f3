"""Message pages in storage: how large fan-outs and replays avoid carrying messages in history.

Pages live under `_sluice/{execution_id}/spill/{spill_id}/` (outside every execution's stage
prefixes) as JSONL of `page_size` messages each, so a batch reads one small page.
"""

from __future__ import annotations

import asyncio
import functools
from collections import OrderedDict, deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from typing import Any

from pydantic import ConfigDict, TypeAdapter
from pydantic_core import from_json, to_json

from sluice.messages import Message
from sluice.replay_messages import ReplayMessages
from sluice.storage.base import ObjectNotFoundError, ObjectStorage
from sluice.storage.keys import INTERNAL_ROOT
from sluice.workflow_io import MessageBatch, RoutedOutput, SpillRef

PAGES_AHEAD = 3  # page writes in flight while the next page fills
READ_AHEAD = 16  # page reads in flight when reading pages in order
KEY_PAGES_KEPT = 16  # pages of replay keys a worker keeps read (`KeyPages`)
_MESSAGES = TypeAdapter(list[Message], config=ConfigDict(cache_strings="keys"))  # as Message
# Derived messages are Python dicts: the string cache only costs there.
_DERIVED = TypeAdapter(list[Message])


SpillItem = Message | dict[str, Any] | str  # a message, a dict of Message's shape, or a replay key


def spill_prefix(execution_id: str, spill_id: str) -> str:
    return f"{INTERNAL_ROOT}/{execution_id}/spill/{spill_id}/"


def replay_keys_prefix(execution_id: str, replay_batch_id: str) -> str:
    """Where a replay's published keys go (its messages are derived from them, see `SpillRef.replay`)."""
    return spill_prefix(execution_id, f"replay-{replay_batch_id}-published")


def page_key(prefix: str, page: int) -> str:
    return f"{prefix}{page:06d}.jsonl"


async def put_page(storage: ObjectStorage, prefix: str, page: int, messages: Sequence[SpillItem]) -> None:
    """One page as JSONL (models, dicts of Message's shape, or a replay's keys as JSON strings),
    serialized by pydantic-core."""
    body = b"\n".join(to_json(m) for m in messages) + b"\n"
    await storage.put(page_key(prefix, page), body, "application/x-ndjson")


async def read_page(storage: ObjectStorage, prefix: str, page: int) -> list[bytes]:
    """A page's JSONL lines, undecoded. Split as bytes: `str.splitlines` also splits at U+2028 and
    U+0085, which pydantic-core leaves raw inside JSON strings."""
    return [line for line in (await storage.get(page_key(prefix, page))).splitlines() if line.strip()]


async def read_pages(storage: ObjectStorage, prefix: str) -> AsyncIterator[list[bytes]]:
    """Pages 0, 1, ... of `prefix` in order (each as `read_page` gives it), up to the first one
    missing; `READ_AHEAD` are read at a time, since a large spill on S3 has thousands."""
    first = 0
    while True:
        window = await asyncio.gather(*(_page_or_none(storage, prefix, first + i) for i in range(READ_AHEAD)))
        for lines in window:
            if lines is None:
                return
            yield lines
        first += READ_AHEAD


async def _page_or_none(storage: ObjectStorage, prefix: str, page: int) -> list[bytes] | None:
    try:
        return await read_page(storage, prefix, page)
    except ObjectNotFoundError:
        return None


async def write_spill(
    storage: ObjectStorage,
    prefix: str,
    messages: Iterable[SpillItem] | AsyncIterable[Sequence[SpillItem]],
    page_size: int,
    *,
    first_page: int = 0,
    on_written: Callable[[int], None] | None = None,
) -> SpillRef:
    """Write messages (or keys, see `put_page`) page by page, the next page filling while earlier
    ones are written (up to `PAGES_AHEAD`, or the pages one chunk fills); memory holds a few pages.

    `messages`: the items, or an async iterable of lists of them (a listing and its checks go a
    page at a time: per item, the async steps cost more than the items' work).
    `first_page`: pages before it are already written (and full): numbering and the returned
    total continue after them. `on_written(n)`: pages [0, n) are written and full, called as that
    grows (the last, partial page is never reported: only the returned reference covers it)."""
    total, page, buf = 0, first_page, list[SpillItem]()
    writing: deque[asyncio.Future[None]] = deque()
    landed: set[int] = set()
    contiguous = first_page  # pages [0, contiguous) are written

    def written(number: int, full: bool, fut: asyncio.Future[None]) -> None:
        nonlocal contiguous
        if fut.cancelled() or fut.exception() is not None or not full:
            return
        landed.add(number)
        before = contiguous
        while contiguous in landed:
            landed.discard(contiguous)
            contiguous += 1
        if on_written is not None and contiguous > before:
            on_written(contiguous)

    def start(items: list[SpillItem]) -> None:
        nonlocal page
        fut = asyncio.ensure_future(put_page(storage, prefix, page, items))
        fut.add_done_callback(functools.partial(written, page, len(items) >= page_size))
        writing.append(fut)
        page += 1

    async def bound(ahead: int) -> None:
        """Wait until at most `ahead` writes are in flight, after one turn of the event loop (a
        write already done yields nothing, and heartbeats must get through)."""
        await asyncio.sleep(0)
        while len(writing) > ahead:
            await writing.popleft()

    try:
        # The pages a chunk fills are written together: on a busy event loop each wait costs a
        # turn of the loop, and a replay's listing fills ten pages at a time.
        chunks = messages if isinstance(messages, AsyncIterable) else _pages_of(messages, page_size)
        async for chunk in chunks:
            buf.extend(chunk)
            total += len(chunk)
            if len(buf) >= page_size:
                cut = len(buf) - len(buf) % page_size
                for start_at in range(0, cut, page_size):
                    start(buf[start_at : start_at + page_size])
                buf = buf[cut:]
                await bound(PAGES_AHEAD)
        if buf:
            start(buf)
        await asyncio.gather(*writing)
    except BaseException:
        await asyncio.gather(*writing, return_exceptions=True)  # no write outlives the call
        raise
    return SpillRef(prefix=prefix, total=first_page * page_size + total, page_size=page_size)


async def _pages_of(items: Iterable[SpillItem], size: int) -> AsyncIterator[list[SpillItem]]:
    """Items as lists of `size` (a page each), so `write_spill` writes a page at a time."""
    page: list[SpillItem] = []
    for item in items:
        page.append(item)
        if len(page) >= size:
            yield page
            page = []
    if page:
        yield page


class OutputSpool:
    """One target's outputs of a batch, written as spill pages while the handler still emits.

    Up to `inline_limit` messages travel inline (in the activity result); past that, every full
    page goes to storage at once, so a fan-out of any size holds one page in memory. Page keys are
    deterministic per activity, so a retry overwrites the same pages.
    """

    def __init__(self, storage: ObjectStorage, target: str, prefix: str, page_size: int, inline_limit: int):
        self.storage, self.target, self.prefix = storage, target, prefix
        self.page_size, self.inline_limit = max(page_size, 1), inline_limit
        self.buffer: list[dict[str, Any]] = []  # messages as dicts of Message's shape
        self.total = 0
        self.pages = 0

    def add(self, message: dict[str, Any]) -> None:
        self.buffer.append(message)
        self.total += 1

    @property
    def spilling(self) -> bool:
        return self.total > self.inline_limit

    @property
    def due(self) -> bool:
        return self.spilling and len(self.buffer) >= self.page_size

    async def flush(self, final: bool = False) -> None:
        """Write every full page (and, when `final`, the last partial one)."""
        while self.spilling and (len(self.buffer) >= self.page_size or (final and self.buffer)):
            page, self.buffer = self.buffer[: self.page_size], self.buffer[self.page_size :]
            number, self.pages = self.pages, self.pages + 1
            await put_page(self.storage, self.prefix, number, page)

    async def result(self) -> RoutedOutput:
        if not self.spilling:
            return RoutedOutput.model_validate({"route": self.target, "messages": self.buffer})
        await self.flush(final=True)
        return RoutedOutput(
            route=self.target, spill=SpillRef(prefix=self.prefix, total=self.total, page_size=self.page_size)
        )


class KeyPages:
    """The pages of replay keys a worker read last, each read and split once.

    A replay's batches slice its pages (a route's adaptive batches of 10 to 500 share pages of 500
    keys; a fixed batch_size below 100 shares pages of about 100), and a page
    of keys never changes once a batch can read it: publishing writes a page before announcing
    it, and a retried publishing keeps the full pages it finds. Message pages are not kept (a
    retried batch rewrites its own)."""

    def __init__(self, kept: int = KEY_PAGES_KEPT):
        self.kept = kept
        self._pages: OrderedDict[str, asyncio.Future[list[bytes]]] = OrderedDict()

    async def read(self, storage: ObjectStorage, prefix: str, page: int) -> list[bytes]:
        key = page_key(prefix, page)
        reading = self._pages.get(key)
        if reading is None:
            reading = self._pages[key] = asyncio.ensure_future(read_page(storage, prefix, page))
            while len(self._pages) > self.kept:
                self._pages.popitem(last=False)
        else:
            self._pages.move_to_end(key)
        try:
            return await asyncio.shield(reading)  # one batch cancelled does not cancel the others' read
        except BaseException:
            if reading.done() and self._pages.get(key) is reading:
                del self._pages[key]  # a failed read is tried again by the next batch
            raise


async def load_batch(
    storage: ObjectStorage, batch: MessageBatch, execution_id: str, key_pages: KeyPages | None = None
) -> list[Message]:
    if batch.messages is not None:
        return batch.messages
    assert batch.spill is not None
    replay = batch.spill.replay
    if replay is not None and key_pages is not None:
        page = await key_pages.read(storage, batch.spill.prefix, batch.page)
    else:
        page = await read_page(storage, batch.spill.prefix, batch.page)
    lines = page[batch.start : batch.start + batch.count]
    if replay is not None:  # a replay's keys: derive their messages
        keys = from_json(b"[" + b",".join(lines) + b"]")  # one parse for the slice's JSON strings
        return _DERIVED.validate_python(ReplayMessages(execution_id, replay).messages(keys))
    # One validation call for the batch: per-line calls cost more than the messages themselves.
    return _MESSAGES.validate_json(b"[" + b",".join(lines) + b"]")
