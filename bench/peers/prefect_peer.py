"""Prefect side of compare_peers.py; runs in Prefect's own virtualenv, next to a `prefect server start`.

    python prefect_peer.py serve                       # flow.serve(): the deployment and its runner
    python prefect_peer.py measure --url URL --out F   # run_deployment(timeout=0), poll until final

The flow: 10 tasks in a row, each a no-op passing its payload on (Prefect runs a flow's tasks in the
flow run's process). `serve` registers the deployment `bench-noop-10/bench` and polls the server for
scheduled runs, every PREFECT_RUNNER_POLL_FREQUENCY seconds (default 10); each run gets its own
process. `measure` triggers a run as a user of a served deployment does, with
`run_deployment(..., timeout=0)`, and reads the flow run until its state is final.
compare_peers.py --tuned runs `serve` with PREFECT_RUNNER_POLL_FREQUENCY=1.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from prefect import flow, task

FLOW_NAME = "bench-noop-10"
DEPLOYMENT_NAME = "bench"
STEPS = 10


@task
def step(payload: dict[str, Any]) -> dict[str, Any]:
    return dict(payload)


@flow(name=FLOW_NAME)
def chain(payload: dict[str, Any] | None = None) -> dict[str, Any]:
    result = dict(payload or {"n": 1})
    for _ in range(STEPS):
        result = step(result)
    return result


def measure_main() -> None:
    from uuid import UUID

    import prefect
    from driver import measure, measure_args
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    args = measure_args(__doc__ or "")
    if os.environ.get("PREFECT_API_URL") != args.url:  # the client reads PREFECT_API_URL
        sys.exit(f"PREFECT_API_URL is {os.environ.get('PREFECT_API_URL')!r}, not --url {args.url!r}")
    with get_client(sync_client=True) as client:

        def ready() -> str | None:
            """The served deployment must exist (serve() creates it before it starts polling)."""
            try:
                client.read_deployment_by_name(f"{FLOW_NAME}/{DEPLOYMENT_NAME}")
            except Exception as exc:
                return f"deployment {FLOW_NAME}/{DEPLOYMENT_NAME}: {exc}"
            return None

        def trigger() -> str:
            flow_run = run_deployment(f"{FLOW_NAME}/{DEPLOYMENT_NAME}", timeout=0, as_subflow=False)
            return str(flow_run.id)

        def status(run_id: str) -> tuple[str | None, float | None]:
            flow_run = client.read_flow_run(UUID(run_id))
            state = flow_run.state
            if state is None or not state.is_final():
                return None, None
            if state.is_completed():
                return "success", flow_run.end_time.timestamp() if flow_run.end_time else None
            return f"{state.type.value}: {state.message}", None

        measure(args, trigger, status, {"version": prefect.__version__}, ready)


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        chain.serve(name=DEPLOYMENT_NAME)
    elif sys.argv[1:2] == ["measure"]:
        measure_main()
    else:
        sys.exit(f"usage: {sys.argv[0]} serve | measure --url URL --out FILE")
