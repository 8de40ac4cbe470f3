"""Sluice next to raw Temporal, Prefect, Dagster and Airflow: 10 no-op steps, trigger -> completion.

    python bench/compare_peers.py [--peers prefect,dagster,airflow] [-m 5] [-w 1] [--tuned] [--json]
                                  [--reinstall]

The same workload everywhere: a pipeline of 10 steps in a row, each a no-op passing a small payload
on, triggered the way a user triggers a run of a deployed pipeline, M runs one after the other
(after W discarded warm-up runs), wall clock from just before the trigger call to when the run is
seen complete. Startup and readiness are not timed.

* raw Temporal and Sluice: the stack of bench/stack.py (Temporal dev server, Sluice worker and API,
  raw worker), as bench_executions.py uses it. Raw: bench/raw_workflow.py's BenchRawSteps (10 activities),
  client.start_workflow -> handle.result(). Sluice: a 10-route config (`step1`..`step10`, `noop`),
  POST /api/v1/configs/{id}/run -> handle.result() on the returned workflow id.
* Prefect, Dagster, Airflow: each installed from PyPI into its own virtualenv under
  ~/.cache/sluice-bench-peers/<peer>-<version>/ (reused; --reinstall rebuilds), started as
  subprocesses with their own home and SQLite database in the run's temp dir, measured by a
  helper (bench/peers/<peer>_peer.py) running in that virtualenv, and stopped afterwards, also on
  an error, Ctrl-C or SIGTERM. A peer that fails to install, start or run is reported as such.
  Peers run with their defaults; --tuned adds a row per peer with its polling tuned (PeerSpec.tuning).

Only one system runs at a time: the Temporal stack is stopped before the first peer starts.
bench/README.md describes the method and its caveats; results also go to
bench/results/peers-<UTC timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import temporalio  # noqa: E402

import sluice  # noqa: E402
from bench.bench_executions import dist  # noqa: E402
from bench.raw_workflow import RAW_STEPS_WORKFLOW  # noqa: E402
from bench.stack import (  # noqa: E402
    RAW_QUEUE,
    bench_settings,
    bench_stack,
    cancel_on_sigterm,
    isolated_run,
    json_safe,
    log,
    temporal_version,
    until_stack_fails,
    write_report,
)
from sluice.runtime.devstack import free_port, tail  # noqa: E402

SLUICE_QUEUE = "sluice-bench-peers"
STEPS = 10
TEMPORAL_RUN_TIMEOUT = 60.0  # one raw or Sluice run
PEER_RUN_TIMEOUT = 300.0  # one peer run (Dagster on a loaded 2-core machine takes ~30 s)
STARTUP_TIMEOUT = 300.0  # a peer's services until they answer
INSTALL_TIMEOUT = 1800.0
POLL_S = 0.1  # how often the peer helpers read a run's status
PEERS_DIR = REPO / "bench" / "peers"
PEER_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sluice-bench-peers"

PIPELINE_YAML = (
    "name: bench-noop-10\n"
    "namespace: bench\n"
    "layer: bench\n"
    "description: 10 no-op routes in a row (bench/compare_peers.py)\n"
    "init_message:\n"
    "  route: step1\n"
    "  payload: {n: 1}\n"
    "routes:\n"
    + "".join(
        f"  - name: step{i}\n    handler: noop\n" + (f"    next: [step{i + 1}]\n" if i < STEPS else "")
        for i in range(1, STEPS + 1)
    )
)


# -- the peers -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PeerSpec:
    name: str
    label: str  # the table's "system" column: "<label> <version>, <how it runs>"
    version: str
    requirements: tuple[str, ...]  # exact pins, installed with pip into the peer's own virtualenv
    constraints: str | None  # a constraints file in bench/peers (pip -c)
    helper: str  # bench/peers/<helper>: the pipeline and the measuring loop, run in the peer's venv
    how: str  # the table's "how triggered" column
    tuning: str  # what --tuned changes (see the starters and the helpers)
    period: float  # the main polling period (default, tuned): the helper pauses 0..period before a trigger
    tuned_period: float

    @property
    def venv(self) -> Path:
        return PEER_CACHE / f"{self.name}-{self.version}"


PEERS: dict[str, PeerSpec] = {
    "prefect": PeerSpec(
        name="prefect",
        label="Prefect {version}, served",
        version="3.9.1",
        requirements=("prefect==3.9.1",),
        constraints=None,
        helper="prefect_peer.py",
        how="`prefect server start` + `flow.serve()`; `run_deployment(timeout=0)`, "
        "done when the flow run reads Completed",
        tuning="PREFECT_RUNNER_POLL_FREQUENCY=1 (the runner asks for scheduled runs every 1 s, not 10 s)",
        period=10.0,
        tuned_period=1.0,
    ),
    "dagster": PeerSpec(
        name="dagster",
        label="Dagster {version}, daemon",
        version="1.13.28",
        requirements=("dagster==1.13.28", "dagster-webserver==1.13.28", "dagster-graphql==1.13.28"),
        constraints=None,
        helper="dagster_peer.py",
        how="dagster-webserver + dagster-daemon (run queue); GraphQL `submit_job_execution`, "
        "done when `get_run_status` is SUCCESS",
        tuning="run_queue.dequeue_interval_seconds: 1 (not 5) and run config "
        "`execution: {config: {in_process: {}}}` (ops in the run's process, not one process per op)",
        period=5.0,
        tuned_period=1.0,
    ),
    "airflow": PeerSpec(
        name="airflow",
        label="Airflow {version}, standalone",
        version="3.3.2",
        requirements=("apache-airflow==3.3.2",),
        constraints="airflow-constraints.txt",
        helper="airflow_peer.py",
        how="`airflow standalone` (LocalExecutor, SQLite); `POST /api/v2/dags/{id}/dagRuns`, "
        "done when the DAG run reads success",
        tuning="AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME=0.1 (the idle scheduler loop sleeps 0.1 s, not 1 s)",
        period=1.0,
        tuned_period=0.1,
    ),
}

RAW_HOW = "`client.start_workflow` (one workflow, 10 activities); done at `handle.result()`"
SLUICE_HOW = "`POST /api/v1/configs/{id}/run`; done at `handle.result()` on the returned workflow id"


class PeerFailure(Exception):
    """A peer could not be installed, started or measured; `stage` says which, `details` the log tail."""

    def __init__(self, stage: str, message: str, details: str = "") -> None:
        super().__init__(message)
        self.stage = stage
        self.details = details


# -- installing a peer -----------------------------------------------------------------------------
def install_key(spec: PeerSpec) -> dict[str, Any]:
    """What a peer's virtualenv was built from; a mismatch with its marker rebuilds it."""
    constraints = None
    if spec.constraints:
        constraints = hashlib.sha256((PEERS_DIR / spec.constraints).read_bytes()).hexdigest()
    return {
        "requirements": list(spec.requirements),
        "constraints_sha256": constraints,
        "python": platform.python_version(),
    }


def ensure_venv(spec: PeerSpec, reinstall: bool) -> Path:
    """The peer's virtualenv (python path), built with `python -m venv` + pip (uv if installed)."""
    root, marker = spec.venv, spec.venv / "sluice-bench-install.json"
    python = root / "bin" / "python"
    key = install_key(spec)
    if not reinstall and python.exists() and marker.exists():
        with contextlib.suppress(ValueError, OSError):
            if json.loads(marker.read_text())["key"] == key:
                return python
    if root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    install_log = root.parent / f"{root.name}.install.log"
    constraints = ["-c", str(PEERS_DIR / spec.constraints)] if spec.constraints else []
    uv = shutil.which("uv")
    if uv:
        steps = [
            [uv, "venv", "--python", sys.executable, str(root)],
            [uv, "pip", "install", "--python", str(python), *spec.requirements, *constraints],
        ]
    else:
        steps = [
            [sys.executable, "-m", "venv", str(root)],
            [str(python), "-m", "pip", "install", *spec.requirements, *constraints],
        ]
    log(f"{spec.name}: installing {' '.join(spec.requirements)} into {root} (log: {install_log}) ...")
    started = time.monotonic()
    env = peer_env(None)
    with install_log.open("w", encoding="utf-8") as fh:
        for cmd in steps:
            fh.write(f"$ {' '.join(cmd)}\n")
            fh.flush()
            try:
                rc = subprocess.run(
                    cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, timeout=INSTALL_TIMEOUT
                ).returncode
            except subprocess.TimeoutExpired:
                rc = -1
                fh.write(f"timed out after {INSTALL_TIMEOUT:.0f}s\n")
            if rc != 0:
                fh.flush()
                last = short_tail(install_log, 1).strip()
                raise PeerFailure(
                    "install", f"`{' '.join(cmd[:4])} ...` exited {rc}: {last}", short_tail(install_log)
                )
    freeze = subprocess.run(
        [str(python), "-m", "pip", "freeze", "--all"]
        if not uv
        else [uv, "pip", "freeze", "--python", str(python)],
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    (root / "freeze.txt").write_text(freeze, encoding="utf-8")
    marker.write_text(json.dumps({"key": key, "installed": time.time()}, indent=2), encoding="utf-8")
    log(f"{spec.name}: installed in {time.monotonic() - started:.0f}s")
    return python


def short_tail(path: Path, lines: int = 12, width: int = 300) -> str:
    """The last lines of a log, each cut to `width` characters (pip prints very long ones)."""
    return "\n".join(
        line if len(line) <= width else line[:width] + " ..." for line in tail(path, lines).splitlines()
    )


def peer_env(venv_python: Path | None, **extra: str) -> dict[str, str]:
    """Our environment without another venv's or peer's settings, the peer's venv first on PATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")
        and not k.startswith(("PREFECT_", "DAGSTER_", "AIRFLOW_"))
    }
    if venv_python is not None:
        bin_dir = str(venv_python.parent)
        env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
        env["VIRTUAL_ENV"] = str(venv_python.parent.parent)
    env["PYTHONUNBUFFERED"] = "1"
    env["DO_NOT_TRACK"] = "1"  # no telemetry attempts (there is no internet here anyway)
    env.update(extra)
    return env


# -- running a peer's services ---------------------------------------------------------------------
@dataclass
class Services:
    """A peer's processes, each in its own session so that the whole tree can be stopped."""

    workdir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        self.logs[name] = self.workdir / f"{name}.log"
        with self.logs[name].open("ab") as fh:
            proc = subprocess.Popen(
                cmd,
                env=env,
                cwd=self.workdir,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None and name != "measure":
                raise PeerFailure("start", f"{name} exited with code {proc.returncode}", self.tails())

    def tails(self, lines: int = 12) -> str:
        return "\n".join(f"--- {name} ---\n{short_tail(path, lines)}" for name, path in self.logs.items())

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM to each process group (newest first), SIGKILL what is left after `grace` seconds."""
        procs = list(reversed(self.procs.values()))
        for proc in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs:
            while time.monotonic() < deadline and group_alive(proc):
                time.sleep(0.2)
            if group_alive(proc):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


def group_alive(proc: subprocess.Popen[bytes]) -> bool:
    """Whether any process of the group that `proc` leads is left (its own exit is reaped first)."""
    proc.poll()
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except (OSError, ValueError):
        return 0, ""


def wait_until(
    services: Services, what: str, ready: Callable[[], bool], timeout: float = STARTUP_TIMEOUT
) -> float:
    """Poll ready() every 0.5 s; fail fast when a service exits. Returns the seconds waited."""
    started = time.monotonic()
    while not ready():
        services.check()
        if time.monotonic() - started > timeout:
            raise PeerFailure("start", f"{what} not ready after {timeout:.0f}s", services.tails())
        time.sleep(0.5)
    return time.monotonic() - started


def start_prefect(python: Path, services: Services, tuned: bool) -> tuple[list[str], dict[str, str]]:
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = peer_env(
        python,
        PREFECT_HOME=str(services.workdir / "home"),
        PREFECT_API_URL=api,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    if tuned:
        env["PREFECT_RUNNER_POLL_FREQUENCY"] = "1"
    services.spawn(
        "server",
        [str(python), "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env,
    )
    waited = wait_until(services, "prefect server", lambda: http_get(f"{api}/health")[0] == 200)
    log(f"  prefect server answers /api/health after {waited:.0f}s")
    services.spawn("serve", [str(python), str(PEERS_DIR / "prefect_peer.py"), "serve"], env)
    waited = wait_until(services, "flow.serve()", lambda: "being served" in tail(services.logs["serve"], 40))
    log(f"  flow.serve() is polling after {waited:.0f}s")
    return ["--url", api], env


def start_dagster(python: Path, services: Services, tuned: bool) -> tuple[list[str], dict[str, str]]:
    port = free_port()
    home = services.workdir / "home"
    home.mkdir()
    instance = "telemetry:\n  enabled: false\n"  # the rest is the default instance (SQLite in DAGSTER_HOME)
    if tuned:
        instance += "run_queue:\n  dequeue_interval_seconds: 1\n"
    (home / "dagster.yaml").write_text(instance, encoding="utf-8")
    workspace = services.workdir / "workspace.yaml"
    workspace.write_text(
        "load_from:\n"
        "  - python_file:\n"
        f"      relative_path: {PEERS_DIR / 'dagster_peer.py'}\n"
        "      location_name: bench\n",
        encoding="utf-8",
    )
    env = peer_env(python, DAGSTER_HOME=str(home))
    bin_dir = python.parent
    services.spawn(
        "webserver",
        [str(bin_dir / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", str(workspace)],
        env,
    )
    url = f"http://127.0.0.1:{port}"
    waited = wait_until(services, "dagster-webserver", lambda: http_get(f"{url}/server_info")[0] == 200)
    log(f"  dagster-webserver answers /server_info after {waited:.0f}s")
    # Only now: started together, both would create the instance's SQLite storage at once (and may
    # fail on its migrations). The helper waits until the job is loaded and the daemon is healthy.
    services.spawn("daemon", [str(bin_dir / "dagster-daemon"), "run", "-w", str(workspace)], env)
    return ["--url", url, *(["--tuned"] if tuned else [])], env


def start_airflow(python: Path, services: Services, tuned: bool) -> tuple[list[str], dict[str, str]]:
    port = free_port()
    home = services.workdir / "home"
    dags = home / "dags"
    dags.mkdir(parents=True)
    shutil.copy(PEERS_DIR / "airflow_peer.py", dags / "airflow_peer.py")
    url = f"http://127.0.0.1:{port}"
    env = peer_env(
        python,
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API__BASE_URL=url,
    )
    if tuned:
        env["AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME"] = "0.1"
    services.spawn("standalone", [str(python.parent / "airflow"), "standalone"], env)

    def healthy() -> bool:
        code, body = http_get(f"{url}/api/v2/monitor/health")
        if code != 200:
            return False
        try:
            health = json.loads(body)
        except ValueError:
            return False
        return all(health.get(part, {}).get("status") == "healthy" for part in ("scheduler", "dag_processor"))

    waited = wait_until(services, "airflow standalone", healthy)
    log(f"  airflow api-server, scheduler and dag-processor healthy after {waited:.0f}s")
    return ["--url", url, "--home", str(home)], env


STARTERS: dict[str, Callable[[Path, Services, bool], tuple[list[str], dict[str, str]]]] = {
    "prefect": start_prefect,
    "dagster": start_dagster,
    "airflow": start_airflow,
}


def run_peer(
    spec: PeerSpec, python: Path, tmp: Path, runs: int, warmup: int, tuned: bool = False
) -> dict[str, Any]:
    """Start the peer's services, run its helper's measuring loop, stop everything (also on errors)."""
    name = f"{spec.name}-tuned" if tuned else spec.name
    services = Services(tmp / name)
    services.workdir.mkdir()
    out = services.workdir / "results.json"
    try:
        log(f"{name}: starting ..." + (f" (tuned: {spec.tuning})" if tuned else ""))
        helper_args, env = STARTERS[spec.name](python, services, tuned)
        log(f"{name}: {warmup} warm-up run(s), then {runs} timed run(s) ...")
        measure = services.spawn(
            "measure",
            [
                str(python),
                str(PEERS_DIR / spec.helper),
                "measure",
                *helper_args,
                "--runs",
                str(runs),
                "--warmup",
                str(warmup),
                "--timeout",
                str(PEER_RUN_TIMEOUT),
                "--poll",
                str(POLL_S),
                "--pause",
                str(spec.tuned_period if tuned else spec.period),
                "--out",
                str(out),
            ],
            env,
        )
        deadline = time.monotonic() + PEER_RUN_TIMEOUT * (runs + warmup + 1)
        relayed = 0
        while measure.poll() is None:
            services.check()
            if time.monotonic() > deadline:
                raise PeerFailure("run", "the measuring helper did not finish in time", services.tails())
            relayed = relay_progress(services.logs["measure"], relayed)
            time.sleep(0.5)
        relay_progress(services.logs["measure"], relayed)
        if measure.returncode != 0 or not out.exists():
            last = (short_tail(services.logs["measure"], 1) or "(no output)").strip()
            raise PeerFailure(
                "run", f"the measuring helper exited with code {measure.returncode}: {last}", services.tails()
            )
        return json.loads(out.read_text())
    finally:
        log(f"{name}: stopping ...")
        services.stop()


def relay_progress(path: Path, relayed: int) -> int:
    """Log the helper's progress lines ("warm-up i/n: ...", "run i/n: ...") not logged yet."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return relayed
    lines = [line for line in text.splitlines() if line.startswith(("warm-up ", "run "))]
    for line in lines[relayed:]:
        log(f"  {line}")
    return max(relayed, len(lines))


# -- raw Temporal and Sluice -----------------------------------------------------------------------
async def measure_temporal(tmp: Path, runs: int, warmup: int) -> dict[str, list[dict[str, float]]]:
    """Raw and Sluice on one stack, runs interleaved (raw, Sluice, Sluice, raw, ...)."""
    settings = bench_settings(tmp, SLUICE_QUEUE)
    log(f"raw Temporal + Sluice: starting the stack in {tmp} ...")
    async with bench_stack(settings, tmp, "file", http_timeout=TEMPORAL_RUN_TIMEOUT) as stack:
        try:
            resp = await stack.http.post(
                "/api/v1/configs", content=PIPELINE_YAML, headers={"Content-Type": "application/yaml"}
            )
            if resp.status_code != 201:
                raise RuntimeError(f"POST /api/v1/configs: {resp.status_code} {resp.text[:1000]}")
            config_id = resp.json()["id"]

            async def raw_run() -> dict[str, float]:
                key = f"bench-peers-raw-{time.time_ns()}"
                t0 = time.time()
                handle = await stack.client.start_workflow(
                    RAW_STEPS_WORKFLOW, {"key": key}, id=key, task_queue=RAW_QUEUE
                )
                t1 = time.time()
                result = await handle.result()
                t2 = time.time()
                if not isinstance(result, dict) or result.get("key") != key:
                    raise RuntimeError(f"raw workflow {key} returned {result!r}")
                return {"trigger": t0, "returned": t1, "done": t2}

            async def sluice_run() -> dict[str, float]:
                t0 = time.time()
                resp = await stack.http.post(f"/api/v1/configs/{config_id}/run")
                t1 = time.time()
                if resp.status_code != 200:
                    raise RuntimeError(f"POST run: {resp.status_code} {resp.text[:500]}")
                body = resp.json()
                await stack.client.get_workflow_handle(body["workflow_id"]).result()
                t2 = time.time()
                # Outside the timed part: the execution must read `completed` through the API.
                check = await stack.http.get(f"/api/v1/executions/{body['id']}")
                status = check.json().get("status") if check.status_code == 200 else check.status_code
                if status != "completed":
                    raise RuntimeError(
                        f"Sluice execution {body['id']} is {status!r} after its workflow completed"
                    )
                return {"trigger": t0, "returned": t1, "done": t2}

            async def loop() -> dict[str, list[dict[str, float]]]:
                pair = (("raw", raw_run), ("sluice", sluice_run))
                results: dict[str, list[dict[str, float]]] = {
                    "raw": [],
                    "sluice": [],
                    "raw_warmup": [],
                    "sluice_warmup": [],
                }
                for i in range(warmup + runs):
                    phase = "warm-up" if i < warmup else "run"
                    number = i + 1 if i < warmup else i + 1 - warmup
                    took = {}
                    for name, one in pair if i % 2 == 0 else pair[::-1]:
                        run = await asyncio.wait_for(one(), TEMPORAL_RUN_TIMEOUT)
                        results[name if i >= warmup else f"{name}_warmup"].append(run)
                        took[name] = run["done"] - run["trigger"]
                    log(f"  {phase} {number}: raw {took['raw']:.2f}s, Sluice {took['sluice']:.2f}s")
                return results

            return await until_stack_fails(stack, loop())
        except Exception:
            stack.dump_logs()
            raise


# -- the report ------------------------------------------------------------------------------------
def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def seconds(end: str) -> list[float]:
        return [r[end] - r["trigger"] for r in runs if r.get(end) is not None]

    return {
        "end_to_end_s": dist(seconds("done")),
        "trigger_call_s": dist(seconds("returned")),
        "recorded_end_s": dist(seconds("server_end")),
    }


def system_entry(label: str, how: str, completion: str, **extra: Any) -> dict[str, Any]:
    return {"label": label, "how_triggered": how, "completion": completion, **extra}


def temporal_entries(figures: dict[str, list[dict[str, float]]]) -> list[dict[str, Any]]:
    return [
        system_entry(
            "raw Temporal",
            RAW_HOW,
            "Temporal long-poll (handle.result())",
            name="raw",
            status="ok",
            version=f"temporalio {temporalio.__version__}",
            **summarize(figures["raw"]),
            runs=figures["raw"],
            warmup_runs=figures["raw_warmup"],
        ),
        system_entry(
            "Sluice",
            SLUICE_HOW,
            "Temporal long-poll (handle.result() on the execution's workflow)",
            name="sluice",
            status="ok",
            version=f"sluice {sluice.__version__}",
            **summarize(figures["sluice"]),
            runs=figures["sluice"],
            warmup_runs=figures["sluice_warmup"],
        ),
    ]


def peer_entry(
    spec: PeerSpec, results: dict[str, Any] | None, failure: BaseException | None, tuned: bool = False
) -> dict[str, Any]:
    entry = system_entry(
        spec.label.format(version=spec.version) + (", tuned" if tuned else ""),
        f"as above; tuned: {spec.tuning}" if tuned else spec.how,
        f"status poll every {POLL_S} s sees the run final",
        name=f"{spec.name}-tuned" if tuned else spec.name,
        tuned=spec.tuning if tuned else None,
        pause_before_trigger_max_s=spec.tuned_period if tuned else spec.period,
        version=f"{spec.name} {spec.version}",
        requirements=list(spec.requirements),
        constraints=f"bench/peers/{spec.constraints}" if spec.constraints else None,
        venv=str(spec.venv),
    )
    if failure is not None:
        stage = failure.stage if isinstance(failure, PeerFailure) else "run"
        details = failure.details if isinstance(failure, PeerFailure) else ""
        entry.update(
            status=f"failed to {stage}", error=f"{type(failure).__name__}: {failure}", details=details
        )
        return entry
    assert results is not None
    entry.update(
        status="ok",
        version=f"{spec.name} {results.get('version', spec.version)}",
        **summarize(results["runs"]),
        runs=results["runs"],
        warmup_runs=results["warmup"],
    )
    return entry


def fmt_s(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.2f} s"


def render(report: dict[str, Any]) -> str:
    meta, params = report["meta"], report["params"]
    systems = report["systems"]
    raw_p50 = systems[0]["end_to_end_s"]["p50"] if systems and systems[0].get("status") == "ok" else None
    lines = [
        f"{STEPS} sequential no-op steps, trigger -> completion, {meta['timestamp']}, {meta['cpus']} CPU(s), "
        f"python {meta['python']}, temporal CLI {meta['temporal_cli']}",
        f"{params['runs']} timed run(s) per system, one at a time, after {params['warmup']} warm-up run(s); "
        "one system running at a time; load average (1 min) "
        f"{meta['loadavg_start'][0]:.1f} at the start, {meta['loadavg_end'][0]:.1f} at the end",
        "",
        "| system | p50 | p90 | ratio p50 to raw Temporal | how triggered |",
        "|---|---:|---:|---:|---|",
    ]
    for s in systems:
        name = s["label"]
        if s["status"] != "ok":
            first = s["error"].splitlines()[0][:120].replace("|", "/") if s.get("error") else ""
            lines.append(f"| {name} | {s['status']}: {first} | - | - | {s['how_triggered']} |")
            continue
        p50, p90 = s["end_to_end_s"]["p50"], s["end_to_end_s"]["p90"]
        ratio = f"{p50 / raw_p50:.2f}" if raw_p50 else "-"
        lines.append(f"| {name} | {fmt_s(p50)} | {fmt_s(p90)} | {ratio} | {s['how_triggered']} |")
    spread = [
        f"{s['label']} {s['end_to_end_s']['min']:.2f}-{s['end_to_end_s']['max']:.2f} s"
        for s in systems
        if s["status"] == "ok"
    ]
    recorded = [
        f"{s['label']} {fmt_s(s['recorded_end_s']['p50'])}"
        for s in systems
        if s["status"] == "ok" and s["recorded_end_s"]["n"]
    ]
    lines += [
        "",
        "Clock: trigger call -> raw/Sluice: Temporal result (long-poll); peers: first status poll "
        f"(every {POLL_S} s) that sees the run final. Before each peer trigger: an untimed random pause "
        "of up to the peer's polling period ("
        + ", ".join(f"{p.name} {p.period:g} s, tuned {p.tuned_period:g} s" for p in PEERS.values())
        + ").",
    ]
    lines.append("min-max: " + ", ".join(spread))
    if recorded:
        lines.append("p50 up to the end time the peer itself recorded for the run: " + ", ".join(recorded))
    for s in systems:
        if s["status"] != "ok":
            lines += ["", f"{s['label']}: {s['status']}: {s['error']}"]
            if s.get("details"):
                lines += ["```", s["details"], "```"]
    return "\n".join(lines)


# -- the run ---------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--peers",
        default=",".join(PEERS),
        help="comma-separated peers to run next to raw Temporal and Sluice (default %(default)s; '' for none)",
    )
    parser.add_argument(
        "-m", "--runs", type=int, default=5, help="timed sequential runs per system (default %(default)s)"
    )
    parser.add_argument(
        "-w", "--warmup", type=int, default=1, help="discarded warm-up runs per system (default %(default)s)"
    )
    parser.add_argument(
        "--tuned",
        action="store_true",
        help="also run each peer with its polling tuned (one more row per peer; the default rows stay)",
    )
    parser.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    parser.add_argument(
        "--reinstall", action="store_true", help=f"rebuild the peers' virtualenvs under {PEER_CACHE}"
    )
    args = parser.parse_args(argv)
    args.peer_names = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in args.peer_names if p not in PEERS]
    if unknown:
        parser.error(f"unknown peer(s) {', '.join(unknown)}; choose from {', '.join(PEERS)}")
    if args.runs < 1:
        parser.error("-m must be at least 1")
    if args.warmup < 0:
        parser.error("-w must be at least 0")
    return args


async def temporal_main(tmp: Path, runs: int, warmup: int) -> dict[str, list[dict[str, float]]]:
    cancel_on_sigterm()
    return await measure_temporal(tmp, runs, warmup)


def sigterm_interrupts() -> None:
    """SIGTERM stops the run like Ctrl-C: the finally blocks stop every process we started."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def benchmark(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    pythons: dict[str, Path] = {}
    failures: dict[str, BaseException] = {}
    for name in args.peer_names:
        try:
            pythons[name] = ensure_venv(PEERS[name], args.reinstall)
        except PeerFailure as exc:
            log(f"{name}: {exc.stage} failed: {exc}")
            failures[name] = exc
    (tmp / "temporal").mkdir()
    figures = asyncio.run(temporal_main(tmp / "temporal", args.runs, args.warmup))
    sigterm_interrupts()  # asyncio.run put SIGTERM back to its default
    systems = temporal_entries(figures)
    for name in args.peer_names:
        for tuned in (False, True) if args.tuned else (False,):
            spec, results, failure = PEERS[name], None, failures.get(name)
            if failure is None:
                try:
                    results = run_peer(spec, pythons[name], tmp, args.runs, args.warmup, tuned)
                except Exception as exc:
                    log(f"{name}{'-tuned' if tuned else ''}: failed: {exc}")
                    failure = exc
            systems.append(peer_entry(spec, results, failure, tuned))
    return systems


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sigterm_interrupts()
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    try:
        with isolated_run() as tmp:
            systems = benchmark(args, tmp)
    except KeyboardInterrupt:
        log("compare_peers: interrupted")
        return 130
    except asyncio.CancelledError:
        log("compare_peers: terminated")
        return 143
    report = {
        "benchmark": "peers",
        "meta": {
            "timestamp": started.strftime("%Y-%m-%d %H:%M:%S UTC"),
            "python": platform.python_version(),
            "temporal_cli": temporal_version(),
            "temporalio": temporalio.__version__,
            "sluice": sluice.__version__,
            "cpus": os.cpu_count(),
            "loadavg_start": list(load_before),  # 1/5/15-minute load: others' work on the machine
            "loadavg_end": list(os.getloadavg()),
            "platform": platform.platform(),
            "peer_cache": str(PEER_CACHE),
        },
        "params": {
            "runs": args.runs,
            "warmup": args.warmup,
            "peers": args.peer_names,
            "steps": STEPS,
            "peer_poll_s": POLL_S,
            "tuned": args.tuned,
        },
        "systems": systems,
    }
    out = write_report(report, "peers")
    if args.json:
        print(json.dumps(json_safe(report), indent=2))
    else:
        print(render(report))
        print(f"\n(JSON: {out.relative_to(REPO)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
