"""Long-running processes freeze the heap their startup built (`sluice worker`, `sluice api`)."""

from __future__ import annotations

import gc
import weakref

from sluice.runtime.heap import freeze_startup_heap


class _Node:
    other: _Node


def test_startup_garbage_is_collected_before_the_heap_is_frozen() -> None:
    a, b = _Node(), _Node()
    a.other, b.other = b, a  # a cycle: only the collector frees it
    gone = weakref.ref(a)
    del a, b
    try:
        freeze_startup_heap()
        assert gone() is None  # collected, not frozen for good
        assert gc.get_freeze_count() > 0  # what remains is out of later collections
    finally:
        gc.unfreeze()
