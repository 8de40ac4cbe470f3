"""Pipeline code runs only on workers, only from allowed modules, reads only what it may, and a
worker asked to stop exits even when a handler hangs."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import psutil

from sluice.auth.roles import Role
from tests.conftest import Stack, StackFactory, start_worker, wait_until_polling
from tests.security import bearer, role_tokens

MARKER_MODULE = """
import os
from pathlib import Path

Path(os.environ["SLUICE_TEST_MARKER"]).write_text(str(os.getpid()))  # a side effect on import


async def handle(message, ctx):
    await ctx.emit("ok.txt", "ok")
"""


def pipeline(handler: str, extra: str = "") -> str:
    return (
        "name: checked\ninit_message: {route: a}\nroutes:\n"
        f"  - {{name: a, handler: '{handler}', stage: s{extra}}}\n"
    )


async def validate(stack: Stack, yaml_text: str) -> dict:
    resp = await stack.http.post(
        "/api/v1/configs/validate", content=yaml_text, headers={"Content-Type": "application/yaml"}
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


async def test_the_api_never_imports_handler_modules(make_stack: StackFactory, tmp_path: Path) -> None:
    """The API checks syntax and policy; a worker (another process here) imports and reports."""
    stack = await make_stack(worker=False)
    modules = tmp_path / "handlers"
    modules.mkdir()
    (modules / "marker_mod.py").write_text(MARKER_MODULE)
    marker = tmp_path / "imported-by"
    log = tmp_path / "worker.log"
    worker = start_worker(
        stack,
        log,
        SLUICE_HANDLER_PATHS=f"{modules}{os.pathsep}{stack.settings.handler_paths}",
        SLUICE_TEST_MARKER=str(marker),
    )
    try:
        await wait_until_polling([log])
        report = await validate(stack, pipeline("marker_mod:handle"))
        assert report["is_valid"] and report["issues"] == []
        assert marker.read_text() == str(worker.pid)  # imported on the worker...
        assert "marker_mod" not in sys.modules  # ...never here, where the API runs

        missing = await validate(stack, pipeline("no_such_module_xyz:handle"))
        [issue] = missing["issues"]
        assert (issue["code"], issue["path"]) == ("E302", "routes[0].handler") and not missing["is_valid"]
        bad_signature = await validate(stack, pipeline("tests.handlers:not_a_handler"))
        assert bad_signature["issues"][0]["code"] == "E303"

        stored = await stack.http.post(
            "/api/v1/configs",
            content=pipeline("no_such_module_xyz:handle"),
            headers={"Content-Type": "application/yaml"},
        )
        assert stored.status_code == 400 and stored.json()["issues"][0]["code"] == "E302"

        # A route on a queue no worker polls: a warning with its own code, at once.
        started = time.monotonic()
        unchecked = await validate(stack, pipeline("marker_mod:handle", ", task_queue: gpu-nobody"))
        assert unchecked["is_valid"] and [i["code"] for i in unchecked["issues"]] == ["W301"]
        assert "gpu-nobody" in unchecked["issues"][0]["message"]
        assert time.monotonic() - started < stack.settings.seconds("handler_check_timeout")
    finally:
        worker.terminate()
        worker.wait(timeout=30)


async def test_standard_library_handlers_are_refused_without_importing(stack: Stack, tmp_path: Path) -> None:
    before = set(os.listdir(Path.cwd()))
    for handler in ("builtins:eval", "subprocess:run", "os:popen", "pty:spawn", "venv.__main__:x"):
        report = await validate(stack, pipeline(handler))
        assert [i["code"] for i in report["issues"]] == ["E305"], (handler, report)
    assert set(os.listdir(Path.cwd())) == before  # venv.__main__ was not run: no virtualenv appeared
    assert "venv.__main__" not in sys.modules


async def test_with_auth_on_and_no_allow_list_only_builtins_validate(make_stack: StackFactory) -> None:
    stack = await make_stack(auth="token")
    editor = bearer((await role_tokens(stack))[Role.editor])
    resp = await stack.http.post(
        "/api/v1/configs/validate",
        content=pipeline("tests.handlers:fanout"),
        headers={"Content-Type": "application/yaml", **editor},
    )
    assert [i["code"] for i in resp.json()["issues"]] == ["E304"]
    builtin = await stack.http.post(
        "/api/v1/configs/validate",
        content=pipeline("noop"),
        headers={"Content-Type": "application/yaml", **editor},
    )
    assert builtin.json()["is_valid"]


async def test_read_files_reads_only_under_read_roots(stack: Stack, tmp_path: Path) -> None:
    config = await stack.create_config(
        "name: snoop\ninit_message: {route: a, payload: {source: /etc}}\nroutes:\n  - {name: a, handler: read_files, stage: s}\n"
    )
    done = await stack.wait((await stack.run(config["id"])).json()["id"])
    assert done["status"] == "failed" and "SLUICE_READ_ROOTS" in done["error"]
    routes = (await stack.http.get(f"/api/v1/executions/{done['id']}/routes")).json()["routes"]
    assert routes[0]["retries"] == 0 and routes[0]["objects_written"] == 0

    # A link inside an allowed folder that points outside it is skipped, not followed.
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "mine.txt").write_text("mine")
    (inbox / "passwd.txt").symlink_to("/etc/passwd")
    ok_config = await stack.create_config(
        f"name: inbox\ninit_message: {{route: a, payload: {{source: {inbox}}}}}\nroutes:\n"
        "  - {name: a, handler: read_files, stage: s}\n"
    )
    ok = await stack.wait((await stack.run(ok_config["id"])).json()["id"])
    assert ok["status"] == "completed"
    assert [p.name for p in stack.objects(ok["id"], "s")] == ["mine.txt"]


async def test_ctx_read_is_limited_to_the_execution_its_ancestors_and_its_inputs(stack: Stack) -> None:
    source = await stack.create_config(
        "name: source\ninit_message: {route: a, payload: {count: 1}}\nroutes:\n"
        "  - {name: a, handler: 'tests.handlers:fanout', stage: raw}\n"
    )
    first = await stack.wait((await stack.run(source["id"])).json()["id"])
    key = f"{first['id']}/raw/item-00000.txt"

    reader = await stack.create_config(
        "name: reader\ninit_message: {route: a}\nroutes:\n  - {name: a, handler: 'tests.handlers:read_key', stage: out}\n"
    )
    # Another execution's object named in a payload field: refused, not retried.
    denied = await stack.wait((await stack.run(reader["id"], {"key": key})).json()["id"])
    assert denied["status"] == "failed" and "not an object of this execution" in denied["error"]
    # The same object given to the run as its input message's object_key: readable.
    given = await stack.wait((await stack.run(reader["id"], {"object_key": key})).json()["id"])
    assert given["status"] == "completed", given
    # A replay reads its parent's objects.
    replay = await stack.http.post(
        f"/api/v1/executions/{first['id']}/replay",
        json={"replay_source": "storage", "from_stage": "raw", "to_route": "a", "config_id": reader["id"]},
    )
    assert replay.status_code == 200, replay.text
    assert (await stack.wait(replay.json()["id"]))["status"] == "completed"


async def test_a_worker_asked_to_stop_exits_even_if_a_handler_hangs(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    stack = await make_stack(worker=False)
    log = tmp_path / "worker.log"
    worker = start_worker(stack, log, SLUICE_WORKER_SHUTDOWN_GRACE="2s")
    pidfile = tmp_path / "child.pid"
    try:
        await wait_until_polling([log])
        config = await stack.create_config(
            "name: hangs\ninit_message: {route: a}\nroutes:\n"
            f"  - {{name: a, handler: 'tests.handlers:hang_with_child', stage: s, params: {{pidfile: '{pidfile}'}}}}\n"
        )
        await stack.run(config["id"])
        for _ in range(300):
            if pidfile.exists() and pidfile.read_text():
                break
            await asyncio.sleep(0.05)
        child = int(pidfile.read_text())
        assert psutil.pid_exists(child)
        stopping = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(worker.wait, 30)
        took = time.monotonic() - stopping
        # The grace (2 s) plus the watchdog's margin (5 s), with room for a busy machine.
        assert took < 2 + 5 + 5, f"worker took {took:.1f}s to exit"
        assert code != 0  # it had to give up on the hung handler
        for _ in range(50):
            if not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the handler's child process outlived the worker")
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        if pidfile.exists() and psutil.pid_exists(int(pidfile.read_text() or 0)):
            psutil.Process(int(pidfile.read_text())).kill()


async def test_a_message_payload_over_64_kib_fails_its_route_clearly(stack: Stack) -> None:
    config = await stack.create_config(
        "name: sized\ninit_message: {route: a}\nroutes:\n"
        "  - {name: a, handler: 'tests.handlers:send_sized', next: [b]}\n"
        "  - {name: b, handler: noop}\n"
    )
    # Just under the limit: it travels on (60,000 bytes of UTF-8 JSON).
    fits = await stack.wait((await stack.run(config["id"], {"size": 60_000})).json()["id"])
    assert fits["status"] == "completed", fits
    # Over it: the route fails with what to do instead, and nothing is sent on.
    too_big = await stack.wait((await stack.run(config["id"], {"size": 70_000})).json()["id"])
    assert too_big["status"] == "failed"
    assert "exceeds 65536" in too_big["error"] and "ctx.emit()" in too_big["error"], too_big["error"]
    routes = (await stack.http.get(f"/api/v1/executions/{too_big['id']}/routes")).json()["routes"]
    assert {r["route"]: r["messages_in"] for r in routes}.get("b", 0) == 0
