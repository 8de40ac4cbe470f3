"""Airflow side of compare_peers.py; runs in Airflow's own virtualenv.

    (DAG file)  compare_peers.py copies this file into the dags folder of an `airflow standalone`
    python airflow_peer.py measure --url URL --home AIRFLOW_HOME --out F   # REST trigger, poll

The DAG: 10 TaskFlow tasks in a row (`step1`..`step10`), each a no-op passing its payload on (through
XCom, as TaskFlow does), no schedule, unpaused on creation. `measure` logs in to the API server as
the standalone admin user (password from the simple auth manager's generated file), triggers runs
with `POST /api/v2/dags/{dag_id}/dagRuns` and reads `GET .../dagRuns/{run_id}` until the run is
final. Only the standard library is used here (besides airflow.sdk for the DAG). compare_peers.py
--tuned starts Airflow with AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME=0.1; this file is the same.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

from airflow.sdk import dag, task

DAG_ID = "bench_noop_10"
STEPS = 10


@task
def step(payload: dict[str, Any]) -> dict[str, Any]:
    return dict(payload)


@dag(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    is_paused_upon_creation=False,
)
def chain() -> None:
    payload: Any = {"n": 1}
    for i in range(1, STEPS + 1):
        payload = step.override(task_id=f"step{i}")(payload)


chain()


def measure_main() -> None:
    import json
    import urllib.error
    import urllib.request
    from pathlib import Path

    from driver import measure, measure_args

    args = measure_args(__doc__ or "")
    base = args.url.rstrip("/")
    passwords = json.loads((Path(args.home) / "simple_auth_manager_passwords.json.generated").read_text())
    token = ""

    def call(method: str, path: str, body: Any = None, auth: bool = True) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(base + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if auth:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")[:500]

    code, body = call(
        "POST", "/auth/token", {"username": "admin", "password": passwords["admin"]}, auth=False
    )
    if code not in (200, 201):
        raise RuntimeError(f"POST /auth/token: {code} {body}")
    token = body["access_token"]

    def ready() -> str | None:
        """The DAG must be parsed, stored and unpaused before the first trigger."""
        code, body = call("GET", f"/api/v2/dags/{DAG_ID}")
        if code == 200 and not body.get("is_paused"):
            return None
        return f"DAG {DAG_ID}: {code} {body}"

    def trigger() -> str:
        code, body = call("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None})
        if code != 200:
            raise RuntimeError(f"POST dagRuns: {code} {body}")
        return str(body["dag_run_id"])

    def status(run_id: str) -> tuple[str | None, float | None]:
        code, body = call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.request.quote(run_id, safe='')}")
        if code != 200:
            raise RuntimeError(f"GET dagRun: {code} {body}")
        state = body.get("state")
        if state == "success":
            end = body.get("end_date")
            return "success", datetime.fromisoformat(end).timestamp() if end else None
        if state == "failed":
            return "failed", None
        return None, None

    import airflow

    measure(args, trigger, status, {"version": airflow.__version__}, ready)


if __name__ == "__main__":
    if sys.argv[1:2] == ["measure"]:
        measure_main()
    else:
        sys.exit(f"usage: {sys.argv[0]} measure --url URL --home AIRFLOW_HOME --out FILE")
