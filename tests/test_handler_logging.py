"""Handler logging is Python logging: ctx.log is a standard logger adapter, and what handler code
logs through `logging` (its own loggers, libraries) is stored as the route's execution logs."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest

from sluice.logcontext import batch_context, configure_logging, message_context
from tests.conftest import Stack, StackFactory

PIPELINE = """
name: logs
init_message: {route: talk, payload: {n: 7}}
routes:
  - {name: talk, handler: "tests.handlers:log_the_standard_way", stage: out, next: [thread]}
  - {name: thread, handler: "tests.handlers:log_from_a_thread"}
"""


async def handler_lines(stack: Stack, execution_id: str) -> list[dict]:
    logs = (await stack.http.get(f"/api/v1/executions/{execution_id}/logs")).json()["logs"]
    return [line for line in logs if line["kind"] == "handler"]


async def test_ctx_log_and_module_loggers_are_stored(stack: Stack) -> None:
    config = await stack.create_config(PIPELINE)
    done = await stack.wait((await stack.run(config["id"])).json()["id"])
    assert done["status"] == "completed"
    lines = await handler_lines(stack, done["id"])
    by_message = {line["message"].splitlines()[0]: line for line in lines}
    assert by_message["collected item of 3"]["level"] == "info"
    assert by_message["careful: {'k': 1}"]["level"] == "warn"
    assert by_message["debug is on"]["level"] == "debug"
    failed = by_message["lookup failed for x"]
    assert (
        failed["level"] == "error"
        and "Traceback" in failed["message"]
        and "KeyError: 'missing-key'" in failed["message"]
    )
    assert by_message["module logger says hi"]["route"] == "talk"
    assert by_message["library error 42"]["level"] == "error"
    assert by_message["old style still works"]["level"] == "warn"
    assert by_message["from the thread None"]["route"] == "thread"  # its message carries done.txt
    assert all(line["correlation_id"] for line in lines)  # each line names its message
    # Sluice's own machinery is not the handler's log.
    assert not any(line["message"].startswith(("HTTP Request", "Completing activity")) for line in lines)


async def test_the_stored_level_is_configurable(make_stack: StackFactory) -> None:
    stack = await make_stack(handler_log_level="warning")
    config = await stack.create_config(PIPELINE)
    done = await stack.wait((await stack.run(config["id"])).json()["id"])
    levels = {line["level"] for line in await handler_lines(stack, done["id"])}
    assert levels == {"warn", "error"}


async def test_a_failing_batch_stores_its_traceback(stack: Stack) -> None:
    config = await stack.create_config(
        """
name: broken
init_message: {route: only, payload: {}}
routes:
  - {name: only, handler: "tests.handlers:fail_with_traceback", retry: {max_attempts: 1}}
"""
    )
    done = await stack.wait((await stack.run(config["id"])).json()["id"])
    assert done["status"] == "failed"
    logs = (await stack.http.get(f"/api/v1/executions/{done['id']}/logs")).json()["logs"]
    failure = next(line for line in logs if "attempt 1 failed" in line["message"])
    assert "Traceback (most recent call last)" in failure["message"]
    assert "in inner" in failure["message"] and "ValueError: deep problem" in failure["message"]


def test_json_log_lines_carry_the_context(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging("json")
        log = logging.getLogger("tests.json")
        with batch_context("exec-1", "route-a", lambda record, cid: None, logging.DEBUG):
            with message_context("corr-9"):
                log.info("handled %s", "it")
        log.warning("outside")
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
    first, second = (json.loads(line) for line in stream.getvalue().splitlines()[-2:])
    assert first["message"] == "handled it" and first["level"] == "INFO" and first["logger"] == "tests.json"
    assert (first["execution_id"], first["route"], first["correlation_id"]) == ("exec-1", "route-a", "corr-9")
    assert second["execution_id"] is None and "timestamp" in second
