"""Ctrl-C and SIGTERM as an event: every long-running command stops the same graceful way."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event | None = None) -> Iterator[asyncio.Event]:
    """Set `stop` (or a new event) on SIGINT/SIGTERM instead of raising; restore on exit.

    Outside the main thread (an embedded worker, a test) signals cannot be caught: the event then
    only fires when its owner sets it.
    """
    event = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in STOP_SIGNALS:
        try:
            loop.add_signal_handler(sig, event.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    try:
        yield event
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
