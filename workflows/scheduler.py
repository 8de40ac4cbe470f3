"""The scheduling core of an execution: queues, batching, concurrency bounds, collect routes and
route statuses, as a pure state machine.

`ExecutionWorkflow` owns everything Temporal (activities, timers, continue-as-new) and asks this
class what to start next and what a finished batch changes. Nothing here reads a clock, does I/O
or touches Temporal, so it is unit-tested directly (tests/test_scheduler.py) and behaves the same
on every replay of a history.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from datetime import datetime
from typing import Literal

from sluice.graph import ancestors
from sluice.ids import derived_id
from sluice.messages import Message, MessageMetadata
from sluice.pipeline_config import RouteConfig
from sluice.workflow_io import CarriedState, MessageBatch, QueueEntry, RouteProgress, RouteResult, SpillRef

MIN_PAGE = 100  # messages per spill page, at least
# Routes without `batch_size`: the first batches hold AUTO_FIRST_BATCH messages; later ones as many
# as the handler gets through in about AUTO_BATCH_SECONDS (its measured pace), 1 to AUTO_MAX_BATCH.
# Batches read from spill pages go up to a page (AUTO_MAX_BATCH, the page size of such routes);
# batches of inline messages, which travel in the activity's input, stay within AUTO_MAX_INLINE.
AUTO_FIRST_BATCH = 10
AUTO_MAX_BATCH = 500
AUTO_MAX_INLINE = 100
AUTO_BATCH_SECONDS = 1.0
ENTRY_LIMIT = 1000  # inline messages per queue entry (keeps slicing a batch off the head cheap)

Outcome = Literal["completed", "failed", "cancelled"]


class Scheduler:
    """What runs next in one execution. Batches leave through `next_batches` and come back
    through `batch_succeeded` / `batch_failed` / `batch_cancelled`."""

    def __init__(
        self,
        execution_id: str,
        routes: list[RouteConfig],
        *,
        max_in_flight: int,
        carried: CarriedState | None = None,
        max_messages: int | None = None,
    ) -> None:
        self.execution_id = execution_id
        self.max_messages = max_messages  # a dry run's cap on the messages each route gets
        self.routes: dict[str, RouteConfig] = {r.name: r for r in routes}
        self.max_in_flight = max_in_flight
        graph = {r.name: [t for t in r.next if t in self.routes] for r in routes}
        self._ancestors = ancestors(graph)
        self.upstream_stages: dict[str, list[str]] = {name: [] for name in self.routes}
        for r in routes:
            for target in graph[r.name]:
                if r.stage and r.stage not in self.upstream_stages[target]:
                    self.upstream_stages[target].append(r.stage)
        if carried is not None:
            self.progress = {p.route: p for p in carried.routes}
            self.queues = {n: deque(carried.queues.get(n, [])) for n in self.routes}
            self.collect_pending = dict(carried.collect_pending)
            self.singles = {n: deque(carried.singles.get(n, [])) for n in self.routes}
        else:
            self.progress = {r.name: RouteProgress(route=r.name, position=i) for i, r in enumerate(routes)}
            self.queues = {n: deque() for n in self.routes}
            self.collect_pending: dict[str, int] = {}
            self.singles: dict[str, deque[MessageBatch]] = {n: deque() for n in self.routes}
        self.in_flight = 0
        self.pace: dict[str, float] = {}  # seconds per message, of routes sized adaptively

    # -- what is left ---------------------------------------------------------------------------
    def has_work(self) -> bool:
        """Messages wait in a queue, or a collect route still has to run (one downstream of a
        failed route never does: it would summarise incomplete data)."""
        return any(self.queues[n] or self.singles[n] for n in self.routes) or any(
            n for n, count in self.collect_pending.items() if count and not self.blocked(n)
        )

    def idle(self, name: str) -> bool:
        return (
            not self.queues[name]
            and not self.singles[name]
            and not self.progress[name].in_flight
            and not self.collect_pending.get(name)
        )

    def blocked(self, name: str) -> bool:
        """A route upstream of `name` failed."""
        return any(self.progress[a].status == "failed" for a in self._ancestors[name])

    def finished(self, name: str) -> bool:
        """The route handled every message it got and can get no more: nothing queued or in
        flight, and every route upstream finished too."""
        return all(self._handled(n) for n in (name, *self._ancestors[name]))

    def _handled(self, name: str) -> bool:
        if not self.idle(name):
            return False
        prog = self.progress[name]
        if self.routes[name].collect:
            return prog.messages_processed > 0 or prog.messages_in == 0
        return prog.messages_processed + prog.messages_failed >= prog.messages_in

    def _promote(self) -> None:
        """Routes that finished show `completed` while the rest of the execution runs on."""
        for name, prog in self.progress.items():
            if prog.status == "running" and self.finished(name):
                prog.status = "completed"

    # -- messages in ----------------------------------------------------------------------------
    def enqueue(self, name: str, entry: QueueEntry) -> None:
        """Queue messages for a route (a collect route only counts them until it runs)."""
        if name not in self.routes:
            return
        prog = self.progress[name]
        size = entry.size
        if self.max_messages is not None and size > self.max_messages - prog.messages_in:
            entry = _first(entry, max(self.max_messages - prog.messages_in, 0))
            size = entry.size
        if size <= 0:
            return
        prog.messages_in += size
        if self.routes[name].collect:
            self.collect_pending[name] = self.collect_pending.get(name, 0) + size
            return
        queue = self.queues[name]
        last = queue[-1] if queue else None
        if (
            entry.messages is not None
            and last is not None
            and last.messages is not None
            and len(last.messages) < ENTRY_LIMIT
        ):
            last.messages.extend(entry.messages)
        else:
            queue.append(entry)
        prog.queued += size

    # -- batches out ----------------------------------------------------------------------------
    def next_batches(self, now: datetime) -> list[tuple[str, MessageBatch]]:
        """Every batch that may start now, in route order, within each route's `concurrency`,
        the execution's `max_in_flight`, and (for collect routes) once all upstream is idle."""
        started: list[tuple[str, MessageBatch]] = []
        for name, route in self.routes.items():
            prog = self.progress[name]
            if route.collect:
                if (
                    self.collect_pending.get(name)
                    and not prog.in_flight
                    and self.in_flight < self.max_in_flight
                    and all(self.idle(a) for a in self._ancestors[name])
                    and not self.blocked(name)
                ):
                    started.append((name, self._start(name, self._collect_batch(name), now)))
                continue
            while (
                (self.queues[name] or self.singles[name])
                and prog.in_flight < route.concurrency
                and self.in_flight < self.max_in_flight
            ):
                batch = self._take(name)
                if batch is None:
                    break
                started.append((name, self._start(name, batch, now)))
        return started

    def _start(self, name: str, batch: MessageBatch, now: datetime) -> MessageBatch:
        prog = self.progress[name]
        if prog.started_at is None:
            prog.started_at = now
        if prog.status != "failed":  # a failed route keeps its status while the rest of its work runs
            prog.status = "running"
        prog.in_flight += 1
        self.in_flight += 1
        return batch

    def _collect_batch(self, name: str) -> MessageBatch:
        count = self.collect_pending.pop(name, 0)
        generation = self.progress[name].messages_processed
        message = Message(
            payload={"collected": count, "stages": self.upstream_stages[name]},
            metadata=MessageMetadata(
                execution_id=self.execution_id,
                correlation_id=derived_id(self.execution_id, name, "collect", generation),
            ),
        )
        return MessageBatch(messages=[message])

    def _take(self, name: str) -> MessageBatch | None:
        """Up to `batch_size` messages off the head of a queue; a batch never spans spill pages."""
        if self.singles[name]:
            self.progress[name].queued -= 1
            return self.singles[name].popleft()
        queue = self.queues[name]
        limit = self.batch_limit(name)
        head = queue[0]
        if head.spill is not None:
            ref = head.spill
            page, start = divmod(ref.offset, ref.page_size)
            count = min(limit, ref.page_size - start, ref.total - ref.offset)
            ref.offset += count
            if ref.offset >= ref.total:
                queue.popleft()
            self.progress[name].queued -= count
            return MessageBatch(
                spill=SpillRef(
                    prefix=ref.prefix, total=ref.total, page_size=ref.page_size, replay=ref.replay
                ),
                page=page,
                start=start,
                count=count,
            )
        if self.routes[name].batch_size is None:
            limit = min(limit, AUTO_MAX_INLINE)
        taken: list[Message] = []
        while queue and queue[0].messages is not None and len(taken) < limit:
            entry = queue[0]
            need = limit - len(taken)
            assert entry.messages is not None
            taken.extend(entry.messages[:need])
            entry.messages = entry.messages[need:]
            if not entry.messages:
                queue.popleft()
        self.progress[name].queued -= len(taken)
        return MessageBatch(messages=taken) if taken else None

    # -- batches back ---------------------------------------------------------------------------
    def batch_succeeded(self, name: str, result: RouteResult, now: datetime) -> None:
        prog = self.progress[name]
        prog.messages_processed += result.processed
        prog.objects_written += result.objects_written
        if result.rows_written is not None:
            prog.rows_written = (prog.rows_written or 0) + result.rows_written
        retries, losses = result.spent()
        prog.retries += retries
        prog.worker_losses += losses
        prog.messages_out += result.messages_out
        prog.completed_at = now
        if result.seconds is not None and result.processed and self.routes[name].batch_size is None:
            pace = result.seconds / result.processed
            self.pace[name] = pace if name not in self.pace else (self.pace[name] + pace) / 2
        for output in result.outputs:
            if output.spill is not None:
                self.enqueue(output.route, QueueEntry(spill=output.spill))
            elif output.messages:
                self.enqueue(output.route, QueueEntry(messages=output.messages))
        self._finished(name)
        self._promote()

    def batch_failed(
        self,
        name: str,
        error: str,
        retries: int,
        worker_losses: int = 0,
        *,
        batch: MessageBatch | None = None,
        isolate: bool = False,
    ) -> bool:
        """A batch failed for good (its retries spent, or a non-retryable error). With `isolate`, a
        batch of several messages is split into one-message batches that run again, so only the
        messages that really fail are lost (what AWS Lambda calls bisecting a batch); returns
        True then. Otherwise the route is `failed` and the batch's messages count as failed."""
        prog = self.progress[name]
        prog.retries += retries
        prog.worker_losses += worker_losses
        self._finished(name)
        if isolate and batch is not None and batch.size > 1:
            singles = _split(batch)
            self.singles[name].extend(singles)
            prog.queued += len(singles)
            return True
        prog.status = "failed"
        prog.error = prog.error or error
        prog.messages_failed += batch.size if batch is not None else 0
        return False

    def batch_cancelled(self, name: str) -> None:
        self._finished(name)

    def _finished(self, name: str) -> None:
        self.progress[name].in_flight -= 1
        self.in_flight -= 1

    # -- the end --------------------------------------------------------------------------------
    def settle(self, outcome: Outcome, now: datetime) -> None:
        """Give every route its final status: routes that handled everything they got are
        `completed`; after a completed execution, routes that never ran are `skipped`; after a
        failed or cancelled one, unfinished routes are `cancelled`."""
        finished = {name for name in self.progress if self.finished(name)}
        for name, prog in self.progress.items():
            if prog.status == "failed":
                continue
            if prog.status == "pending":
                prog.status = "skipped" if outcome == "completed" else "cancelled"
            elif prog.status == "running":
                prog.status = "completed" if outcome == "completed" or name in finished else "cancelled"
            prog.queued = 0
            prog.in_flight = 0
            if prog.started_at is not None and prog.completed_at is None:
                prog.completed_at = now

    def batch_limit(self, name: str) -> int:
        """The route's `batch_size`, or the adaptive size: a fast handler gets bigger batches (fewer
        activities), a slow one smaller (more of them in parallel)."""
        fixed = self.routes[name].batch_size
        if fixed is not None:
            return fixed
        pace = self.pace.get(name)
        if pace is None:
            return AUTO_FIRST_BATCH
        return max(1, min(AUTO_MAX_BATCH, int(AUTO_BATCH_SECONDS / max(pace, 1e-6))))

    def page_size(self, name: str) -> int:
        """A whole number of batches per spill page (a batch never spans pages), at least MIN_PAGE."""
        batch = self.routes[name].batch_size or AUTO_MAX_BATCH
        return batch * -(-MIN_PAGE // batch)

    def inline_messages(self, name: str) -> list[Message]:
        """The messages a route's queue holds inline (not in spill pages)."""
        return [m for entry in self.queues[name] if entry.messages is not None for m in entry.messages]

    def replace_inline(self, name: str, spilled: Iterable[SpillRef]) -> None:
        """Swap a queue's inline messages for the spill pages that now hold them."""
        kept = [entry for entry in self.queues[name] if entry.spill is not None]
        kept.extend(QueueEntry(spill=ref) for ref in spilled)
        self.queues[name] = deque(kept)

    def carried_queues(self) -> dict[str, list[QueueEntry]]:
        return {n: list(q) for n, q in self.queues.items() if q}

    def carried_singles(self) -> dict[str, list[MessageBatch]]:
        return {n: list(q) for n, q in self.singles.items() if q}

    def expect_collect(self, name: str, count: int) -> None:
        """A collect route owes a run for `count` messages gathered before (a resume)."""
        if name in self.routes and self.routes[name].collect and count > 0:
            self.collect_pending[name] = self.collect_pending.get(name, 0) + count
            self.progress[name].messages_in += count


def _first(entry: QueueEntry, count: int) -> QueueEntry:
    """The first `count` messages of a queue entry."""
    if entry.messages is not None:
        return QueueEntry(messages=entry.messages[:count])
    assert entry.spill is not None
    return QueueEntry(spill=entry.spill.model_copy(update={"total": entry.spill.offset + count}))


def _split(batch: MessageBatch) -> list[MessageBatch]:
    if batch.messages is not None:
        return [MessageBatch(messages=[m]) for m in batch.messages]
    return [
        MessageBatch(spill=batch.spill, page=batch.page, start=batch.start + i, count=1)
        for i in range(batch.count)
    ]
