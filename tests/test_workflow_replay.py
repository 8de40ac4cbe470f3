"""Recorded histories of representative executions replay cleanly against today's workflow code.

A change that breaks determinism for workflows already running (a reordered activity, a removed
step) fails here before it ships. The histories under tests/histories/ were recorded with
`tests/histories/record_histories.py`; never re-record them to make this test pass.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from sluice.workflows import WORKFLOWS
from sluice.workflows.scheduler import Scheduler

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


async def replay(histories: list[WorkflowHistory]) -> dict[str, Exception]:
    async def each() -> AsyncIterator[WorkflowHistory]:
        for history in histories:
            yield history

    # In the default sandbox, which production workers skip: a non-deterministic call that a
    # change adds to workflow code fails here.
    replayer = Replayer(
        workflows=WORKFLOWS,
        data_converter=pydantic_data_converter,
        workflow_runner=SandboxedWorkflowRunner(),
    )
    results = await replayer.replay_workflows(each(), raise_on_replay_failure=False)
    return results.replay_failures


def test_the_recorded_scenarios_are_all_there() -> None:
    names = {p.stem.split(".")[0] for p in HISTORIES}
    assert names == {
        "linear_collect",
        "spill_continue_as_new",
        "detached_replay",
        "retry_then_fail",
        "cancelled",
        "isolate_then_fail",
        "resumed",
        "graceful_cancel",
        "backfill",
        "scheduled_run",
        "adaptive_local_finalize",
        "chunked_replay",
        "derived_replay",
        "streamed_replay",
    }


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays(path: Path) -> None:
    assert await replay([load(path)]) == {}


async def test_a_nondeterministic_change_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The replay check can fail: a scheduler that starts fewer batches breaks every history."""
    original = Scheduler.next_batches

    def fewer(self: Scheduler, now):  # type: ignore[no-untyped-def]
        return original(self, now)[:1]

    monkeypatch.setattr(Scheduler, "next_batches", fewer)
    failures = await replay(
        [load(p) for p in HISTORIES if p.stem in ("linear_collect", "spill_continue_as_new.run1")]
    )
    assert len(failures) == 2
    assert all("Nondeterminism" in str(f) for f in failures.values())
