"""The scheduling core of ExecutionWorkflow, tested as the pure state machine it is (no server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sluice.messages import Message, MessageMetadata
from sluice.pipeline_config import RouteConfig
from sluice.workflow_io import CarriedState, QueueEntry, RoutedOutput, RouteResult, SpillRef
from sluice.workflows.scheduler import AUTO_MAX_BATCH, ENTRY_LIMIT, Scheduler

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def route(name: str, **kw: object) -> RouteConfig:
    return RouteConfig(name=name, handler="noop", **kw)


def msgs(n: int, start: int = 0) -> list[Message]:
    return [
        Message(payload={"i": i}, metadata=MessageMetadata(execution_id="e", correlation_id=f"c{i}"))
        for i in range(start, start + n)
    ]


def ok(processed: int, outputs: list[RoutedOutput] | None = None, attempt: int = 1) -> RouteResult:
    return RouteResult(processed=processed, objects_written=processed, outputs=outputs or [], attempt=attempt)


def sizes(batches: list) -> list[tuple[str, int]]:
    return [(name, batch.size) for name, batch in batches]


def test_batches_follow_batch_size_and_route_concurrency() -> None:
    s = Scheduler("e", [route("a", batch_size=3, concurrency=2)], max_in_flight=100)
    s.enqueue("a", QueueEntry(messages=msgs(10)))
    assert s.progress["a"].messages_in == 10
    first = s.next_batches(T0)
    assert sizes(first) == [("a", 3), ("a", 3)]  # concurrency 2 stops the third
    assert s.next_batches(T0) == []
    assert s.progress["a"].in_flight == 2 and s.progress["a"].queued == 4
    assert s.progress["a"].status == "running" and s.progress["a"].started_at == T0
    s.batch_succeeded("a", ok(3), T0 + timedelta(seconds=1))
    assert sizes(s.next_batches(T0)) == [("a", 3)]
    s.batch_succeeded("a", ok(3), T0)
    assert sizes(s.next_batches(T0)) == [("a", 1)]  # the remainder, not padded
    assert not s.has_work()
    # Message order is kept across batches.
    payloads = [m.payload["i"] for _, b in first for m in b.messages]
    assert payloads == [0, 1, 2, 3, 4, 5]


def test_max_in_flight_bounds_the_whole_execution() -> None:
    s = Scheduler("e", [route("a", batch_size=1, concurrency=10), route("b", batch_size=1)], max_in_flight=3)
    s.enqueue("a", QueueEntry(messages=msgs(5)))
    s.enqueue("b", QueueEntry(messages=msgs(5)))
    assert sizes(s.next_batches(T0)) == [("a", 1)] * 3
    assert s.in_flight == 3
    s.batch_succeeded("a", ok(1), T0)
    assert sizes(s.next_batches(T0)) == [("a", 1)]  # route order: a first while it has work


def test_outputs_flow_to_next_routes_and_unknown_routes_are_ignored() -> None:
    s = Scheduler("e", [route("a", next=["b"]), route("b")], max_in_flight=10)
    s.enqueue("a", QueueEntry(messages=msgs(1)))
    s.next_batches(T0)
    out = [RoutedOutput(route="b", messages=msgs(4)), RoutedOutput(route="gone", messages=msgs(2))]
    s.batch_succeeded("a", ok(1, out), T0)
    assert s.progress["a"].messages_out == 6  # what the batch emitted
    assert s.progress["b"].messages_in == 4
    assert "gone" not in s.queues
    assert sizes(s.next_batches(T0)) == [("b", 4)]


def test_inline_entries_merge_but_stay_bounded() -> None:
    s = Scheduler("e", [route("a")], max_in_flight=10)
    for i in range(3):
        s.enqueue("a", QueueEntry(messages=msgs(ENTRY_LIMIT // 2, start=i * ENTRY_LIMIT)))
    assert [len(e.messages) for e in s.queues["a"]] == [ENTRY_LIMIT, ENTRY_LIMIT // 2]
    s.enqueue("a", QueueEntry(messages=[]))
    assert s.progress["a"].messages_in == 3 * (ENTRY_LIMIT // 2)


def test_spilled_pages_are_read_in_slices_that_never_span_a_page() -> None:
    s = Scheduler("e", [route("a", batch_size=30, concurrency=100)], max_in_flight=100)
    ref = SpillRef(prefix="_sluice/e/spill/x/", total=250, page_size=100)
    s.enqueue("a", QueueEntry(spill=ref))
    batches = [b for _, b in s.next_batches(T0)]
    assert [(b.page, b.start, b.count) for b in batches] == [
        (0, 0, 30),
        (0, 30, 30),
        (0, 60, 30),
        (0, 90, 10),
        (1, 0, 30),
        (1, 30, 30),
        (1, 60, 30),
        (1, 90, 10),
        (2, 0, 30),
        (2, 30, 20),
    ]
    assert sum(b.count for b in batches) == 250
    assert all(b.spill is not None and b.spill.offset == 0 for b in batches)
    assert not s.queues["a"]


def test_page_size_is_a_whole_number_of_batches() -> None:
    s = Scheduler("e", [route("a", batch_size=30), route("b", batch_size=500), route("c")], max_in_flight=1)
    assert s.page_size("a") == 120
    assert s.page_size("b") == 500
    assert s.page_size("c") == AUTO_MAX_BATCH  # adaptive: a page is the largest batch


def test_collect_route_runs_once_after_all_upstream_is_idle() -> None:
    routes = [
        route("load", next=["left", "right"], stage="raw"),
        route("left", next=["index"], stage="l"),
        route("right", next=["index"], stage="r"),
        route("index", collect=True),
    ]
    s = Scheduler("exec-1", routes, max_in_flight=10)
    s.enqueue("load", QueueEntry(messages=msgs(1)))
    s.next_batches(T0)
    s.batch_succeeded(
        "load",
        ok(1, [RoutedOutput(route="left", messages=msgs(2)), RoutedOutput(route="right", messages=msgs(1))]),
        T0,
    )
    assert sizes(s.next_batches(T0)) == [("left", 2), ("right", 1)]
    s.batch_succeeded("left", ok(2, [RoutedOutput(route="index", messages=msgs(2))]), T0)
    assert s.next_batches(T0) == []  # right still in flight
    assert s.collect_pending == {"index": 2}
    s.batch_succeeded("right", ok(1, [RoutedOutput(route="index", messages=msgs(1))]), T0)
    [(name, batch)] = s.next_batches(T0)
    assert name == "index"
    [message] = batch.messages
    assert message.payload == {"collected": 3, "stages": ["l", "r"]}
    assert message.metadata.execution_id == "exec-1"
    s.batch_succeeded("index", ok(1), T0)
    assert not s.has_work() and s.next_batches(T0) == []


def test_collect_id_is_deterministic_per_generation() -> None:
    def collect_ids() -> list[str]:
        s = Scheduler("e", [route("a", next=["z"]), route("z", collect=True)], max_in_flight=5)
        ids = []
        for _ in range(2):
            s.enqueue("z", QueueEntry(messages=msgs(1)))
            [(_, batch)] = s.next_batches(T0)
            ids.append(batch.messages[0].metadata.correlation_id)
            s.batch_succeeded("z", ok(1), T0)
        return ids

    first, second = collect_ids(), collect_ids()
    assert first == second and first[0] != first[1]


def test_failure_and_cancellation_free_their_slots() -> None:
    s = Scheduler("e", [route("a", batch_size=1, concurrency=3)], max_in_flight=10)
    s.enqueue("a", QueueEntry(messages=msgs(3)))
    s.next_batches(T0)
    s.batch_failed("a", "ValueError: boom", retries=2)
    s.batch_cancelled("a")
    assert s.in_flight == 1 and s.progress["a"].in_flight == 1
    assert s.progress["a"].status == "failed" and s.progress["a"].error == "ValueError: boom"
    assert s.progress["a"].retries == 2


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        ("completed", {"ran": "completed", "never": "skipped", "broke": "failed"}),
        ("failed", {"ran": "cancelled", "never": "cancelled", "broke": "failed"}),
        ("cancelled", {"ran": "cancelled", "never": "cancelled", "broke": "failed"}),
    ],
)
def test_settle_gives_every_route_a_final_status(outcome: str, expected: dict[str, str]) -> None:
    s = Scheduler("e", [route("ran"), route("never"), route("broke")], max_in_flight=10)
    s.enqueue("ran", QueueEntry(messages=msgs(1)))
    s.enqueue("broke", QueueEntry(messages=msgs(1)))
    s.next_batches(T0)
    s.batch_failed("broke", "x", 0)
    end = T0 + timedelta(seconds=5)
    s.settle(outcome, end)  # type: ignore[arg-type]
    assert {n: p.status for n, p in s.progress.items()} == expected
    assert all(p.in_flight == 0 and p.queued == 0 for p in s.progress.values())
    assert s.progress["ran"].completed_at == end and s.progress["ran"].duration_ms == 5000
    assert s.progress["never"].completed_at is None and s.progress["never"].duration_ms is None


def test_retries_are_counted_from_attempts() -> None:
    s = Scheduler("e", [route("a")], max_in_flight=10)
    s.enqueue("a", QueueEntry(messages=msgs(1)))
    s.next_batches(T0)
    s.batch_succeeded("a", ok(1, attempt=3), T0)
    assert s.progress["a"].retries == 2


def test_carried_state_resumes_where_the_last_run_stopped() -> None:
    routes = [route("a", batch_size=2, next=["b"]), route("b", collect=True)]
    s = Scheduler("e", routes, max_in_flight=10)
    s.enqueue("a", QueueEntry(messages=msgs(5)))
    s.enqueue("b", QueueEntry(messages=msgs(2)))
    s.next_batches(T0)
    for _ in range(3):
        s.batch_succeeded("a", ok(2), T0)
    carried = CarriedState(
        started_at=T0,
        routes=list(s.progress.values()),
        queues=s.carried_queues(),
        collect_pending=s.collect_pending,
    )
    # Through history and back, as continue-as-new does.
    resumed = Scheduler(
        "e", routes, max_in_flight=10, carried=CarriedState.model_validate_json(carried.model_dump_json())
    )
    assert resumed.progress["a"].messages_processed == 6
    assert resumed.collect_pending == {"b": 2}
    assert resumed.in_flight == 0
    assert not resumed.queues["a"]


def test_inline_queues_can_be_swapped_for_spill_pages() -> None:
    s = Scheduler("e", [route("a", batch_size=10)], max_in_flight=10)
    s.enqueue("a", QueueEntry(spill=SpillRef(prefix="p/", total=5, page_size=100)))
    s.enqueue("a", QueueEntry(messages=msgs(300)))
    assert len(s.inline_messages("a")) == 300
    refs = [SpillRef(prefix="q/", total=300, page_size=100)]
    s.replace_inline("a", refs)
    assert [e.spill.prefix for e in s.queues["a"]] == ["p/", "q/"]
    assert s.inline_messages("a") == []


def test_routes_without_batch_size_size_batches_from_the_handlers_pace() -> None:
    """Unset `batch_size`: 10 at first; then about a second of the handler's measured work per
    batch, so a fast handler runs few big activities and a slow one many small ones in parallel."""
    s = Scheduler("e", [route("fast", concurrency=1), route("slow", concurrency=1)], max_in_flight=100)
    s.enqueue("fast", QueueEntry(messages=msgs(500)))
    s.enqueue("slow", QueueEntry(messages=msgs(50)))
    assert sizes(s.next_batches(T0)) == [("fast", 10), ("slow", 10)]
    fast = RouteResult(processed=10, seconds=0.0005)  # 50 µs a message
    slow = RouteResult(processed=10, seconds=5.0)  # half a second a message
    s.batch_succeeded("fast", fast, T0)
    s.batch_succeeded("slow", slow, T0)
    assert sizes(s.next_batches(T0)) == [("fast", 100), ("slow", 2)]  # inline: at most 100
    # Results without a measured time (workers before this field) keep the size where it is.
    s.batch_succeeded("fast", RouteResult(processed=100), T0)
    assert sizes(s.next_batches(T0)) == [("fast", 100)]
    # An explicit batch_size is what runs, whatever the pace.
    fixed = Scheduler("e", [route("a", batch_size=7, concurrency=1)], max_in_flight=10)
    fixed.enqueue("a", QueueEntry(messages=msgs(30)))
    fixed.next_batches(T0)
    fixed.batch_succeeded("a", RouteResult(processed=7, seconds=0.0001), T0)
    assert sizes(fixed.next_batches(T0)) == [("a", 7)]
    assert fixed.page_size("a") == 105 and s.page_size("fast") == AUTO_MAX_BATCH
    # Messages in spill pages (a big fan-out's) go a whole page at a time once the pace allows.
    paged = Scheduler("e", [route("sink", concurrency=2)], max_in_flight=10)
    paged.enqueue("sink", QueueEntry(spill=SpillRef(prefix="p/", total=1200, page_size=AUTO_MAX_BATCH)))
    first = paged.next_batches(T0)
    assert sizes(first) == [("sink", 10), ("sink", 10)]
    paged.batch_succeeded("sink", RouteResult(processed=10, seconds=0.001), T0)
    assert [(b.page, b.start, b.count) for _, b in paged.next_batches(T0)] == [(0, 20, 480)]
    paged.batch_succeeded("sink", RouteResult(processed=10, seconds=0.001), T0)
    paged.batch_succeeded("sink", RouteResult(processed=480, seconds=0.01), T0)
    assert [(b.page, b.start, b.count) for _, b in paged.next_batches(T0)] == [(1, 0, 500), (2, 0, 200)]
