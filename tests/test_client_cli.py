"""The CLI for everything a REST caller does, run as a user would (`python -m sluice ...`) against
the API over HTTP: results on stdout (tables, or JSON with --json), progress and errors on stderr."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from tests.conftest import REPO, Stack

PIPELINE = """
name: cli-demo
init_message: {route: load, payload: {count: 3}}
routes:
  - {name: load, handler: "tests.handlers:fanout", stage: raw, next: [copy]}
  - {name: copy, handler: "tests.handlers:copy", stage: copied}
"""


async def sluice(stack: Stack | None, *args: str) -> tuple[int, str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "SLUICE_API_URL": stack.base_url if stack else "http://127.0.0.1:9",
    }
    env.pop("SLUICE_TOKEN", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sluice", *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_configs_apply_list_show_delete(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(PIPELINE)
    code, out, err = await sluice(stack, "configs", "apply", str(path), "--json")
    assert code == 0, err
    created = json.loads(out)
    assert created["outcome"] == "created" and created["version"] == 1 and "created" in err
    code, out, _ = await sluice(stack, "configs", "apply", str(path), "--json")
    assert json.loads(out)["outcome"] == "unchanged" and json.loads(out)["id"] == created["id"]
    path.write_text(PIPELINE + "# v2\n")
    code, out, _ = await sluice(stack, "configs", "apply", str(path), "--json")
    assert (json.loads(out)["outcome"], json.loads(out)["version"]) == ("updated", 2)
    code, out, _ = await sluice(stack, "configs", "list", "--json")
    assert [c["id"] for c in json.loads(out)] == [created["id"]]
    code, out, _ = await sluice(stack, "configs", "list")
    assert "cli-demo" in out and created["id"][:8] in out  # a table for people
    code, out, _ = await sluice(stack, "configs", "show", created["id"])
    assert out == PIPELINE + "# v2\n"
    code, _, err = await sluice(stack, "configs", "delete", created["id"])
    assert code == 0 and "deleted" in err
    code, _, err = await sluice(stack, "configs", "show", created["id"])
    assert code == 1 and "404" in err


async def test_run_prints_its_id_and_executions_commands(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(PIPELINE)
    code, out, err = await sluice(stack, "run", str(path), "--api", stack.base_url)
    assert code == 0, err
    execution_id = out.strip()
    assert uuid.UUID(execution_id) and "completed" in err  # stdout: only the id

    code, out, _ = await sluice(stack, "executions", "list", "--json")
    assert [e["id"] for e in json.loads(out)] == [execution_id]
    code, out, _ = await sluice(stack, "executions", "show", execution_id, "--json")
    shown = json.loads(out)
    assert shown["status"] == "completed" and [r["route"] for r in shown["routes"]] == ["load", "copy"]
    code, out, _ = await sluice(stack, "executions", "logs", execution_id)
    assert "emitted 3" in out
    code, out, _ = await sluice(stack, "executions", "logs", execution_id, "-f", "--json")
    assert code == 0 and any(json.loads(line)["message"] == "emitted 3" for line in out.splitlines())
    code, out, err = await sluice(
        stack, "executions", "replay", execution_id, "--from-stage", "raw", "--to-route", "copy", "--wait"
    )
    assert code == 0, err
    assert "published 3 of 3" in err and uuid.UUID(out.strip())
    code, out, _ = await sluice(stack, "executions", "lineage", execution_id, "--json")
    assert len(json.loads(out)["nodes"]) == 7  # init, 3 messages, 3 copied objects
    code, _, err = await sluice(stack, "executions", "cancel", execution_id)
    assert code == 1 and "409" in err  # already completed: the API's answer, on stderr


async def test_runs_commands(stack: Stack) -> None:
    config = await stack.create_config(PIPELINE)
    code, out, err = await sluice(stack, "runs", "trigger", config["id"], "--param", "date=2024-01-02")
    assert code == 0, err
    run_id = out.strip()
    for _ in range(100):
        code, out, _ = await sluice(stack, "runs", "show", run_id, "--json")
        if json.loads(out)["status"] not in ("pending", "running"):
            break
    assert json.loads(out)["status"] == "success" and json.loads(out)["params"] == {"date": "2024-01-02"}
    code, out, _ = await sluice(stack, "runs", "list", config["id"], "--json")
    assert [r["id"] for r in json.loads(out)] == [run_id]
    code, out, err = await sluice(
        stack,
        "runs",
        "backfill",
        config["id"],
        "--start-date",
        "2024-01-01",
        "--end-date",
        "2024-01-03",
        "--wait",
    )
    assert code == 0, err
    assert len(out.split()) == 2  # 2024-01-02 already succeeded
    code, out, _ = await sluice(stack, "runs", "logs", run_id)
    assert "[load]" in out


async def test_unreachable_api_and_completion() -> None:
    code, _, err = await sluice(None, "executions", "list")
    assert code == 2 and "cannot reach the API" in err
    code, out, _ = await sluice(None, "--show-completion", "bash")
    assert code == 0 and "_SLUICE_COMPLETE" in out
