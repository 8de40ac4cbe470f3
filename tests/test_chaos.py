"""The chaos suite (bench/chaos.py), one round per scenario: real processes killed with SIGKILL,
and nothing lost, duplicated, stuck or orphaned."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos import Round, api_kills, render, replay_worker_kills, temporal_restart, worker_kills

pytestmark = pytest.mark.slow


def assert_clean(result: Round) -> None:
    assert result.ok, render([result])
    assert result.kills >= 1 and result.executions >= 1


async def test_random_worker_kills_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    result = await worker_kills(tmp_path, kills=5, seed=7)
    assert_clean(result)
    assert result.kills == 5
    assert result.handler_retries == 0  # the handler never failed: worker losses spent nothing


async def test_temporal_killed_and_restarted_mid_run(tmp_path: Path) -> None:
    assert_clean(await temporal_restart(tmp_path))


async def test_api_killed_mid_run_and_mid_replay(tmp_path: Path) -> None:
    assert_clean(await api_kills(tmp_path, replay_objects=8000))


async def test_workers_killed_while_a_replay_publishes_and_runs(tmp_path: Path) -> None:
    result = await replay_worker_kills(tmp_path, kills=3, replay_objects=8000, seed=3)
    assert_clean(result)  # includes: its publishing or a batch was interrupted and ran again
    assert result.kills == 3
