"""Message ids derived before and after a change must agree: resume and retried activities find
earlier messages by re-deriving their ids."""

from __future__ import annotations

import uuid

from sluice.ids import _SLUICE_NS, ClusteredIds, derived_id, uuid7


def test_derived_ids_are_the_uuid5_of_their_parts() -> None:
    cases = [
        ("0193abcd-1234-7000-8000-000000000000", "exec/raw/item-000123.txt"),
        ("batch", 0, None),
        ("ünïcødé ✓", "a/b/c", ""),
        ("",),
    ]
    for parts in cases:
        expected = uuid.uuid5(_SLUICE_NS, "/".join(str(p) for p in parts))
        got = derived_id(*parts)
        assert got == str(expected)
        assert uuid.UUID(got).version == 5


def test_derived_ids_differ_by_part_and_repeat_for_the_same_parts() -> None:
    assert derived_id("a", "b") == derived_id("a", "b")
    assert derived_id("a", "b") != derived_id("a", "c")
    assert derived_id("a", "b") != derived_id("b", "a")


def test_uuid7_sorts_by_creation_time() -> None:
    ids = [uuid7(ms=ms) for ms in (1, 2, 1_700_000_000_000)]
    assert ids == sorted(ids)
    assert all(i.version == 7 for i in ids)


def test_clustered_ids_repeat_sort_with_their_anchor_and_are_valid_uuid7() -> None:
    early, late = str(uuid7(ms=1_700_000_000_000)), str(uuid7(ms=1_700_000_000_001))
    ids = ClusteredIds(early)
    one = ids.id("exec/raw/item-000001.txt")
    assert one == ClusteredIds(early).id("exec/raw/item-000001.txt")  # a retry re-derives it
    assert one != ids.id("exec/raw/item-000002.txt") != ClusteredIds(late).id("exec/raw/item-000002.txt")
    parsed = uuid.UUID(one)
    assert str(parsed) == one and parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert parsed.int >> 80 == uuid.UUID(early).int >> 80  # the anchor's timestamp
    # Every id of an earlier anchor sorts before every id of a later one (index inserts append).
    earlier = [ids.id(f"k{i}") for i in range(200)]
    later = [ClusteredIds(late).id(f"k{i}") for i in range(200)]
    assert max(earlier) < min(later)
    assert len(set(earlier)) == 200
    assert one != derived_id(early, "exec/raw/item-000001.txt")
    # An anchor that is not a UUID still gives valid, repeatable ids.
    assert uuid.UUID(ClusteredIds("batch").id("k")).version == 7
    assert ClusteredIds("batch").id("k") == ClusteredIds("batch").id("k")
