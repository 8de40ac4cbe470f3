"""Dagster side of compare_peers.py; runs in Dagster's own virtualenv.

    (code location)  workspace.yaml -> python_file: dagster_peer.py, loaded by dagster-webserver and
                     dagster-daemon (compare_peers.py starts both)
    python dagster_peer.py measure --url URL --out F   # GraphQL launch, poll the run's status

The job: 10 ops in a row (`step1` makes the payload, `step2`..`step10` pass it on), the job's default
executor (multiprocess: each op runs in its own process) and the default filesystem IO manager.
`measure` launches runs as a user of a deployed job does from outside, through the webserver's
GraphQL API (`DagsterGraphQLClient.submit_job_execution`). The instance's default run coordinator
queues the run; the daemon's run-queue loop (every `dequeue_interval_seconds`, default 5) hands it
to the default run launcher, which starts a process for the run. With `--tuned`
(compare_peers.py --tuned, which also sets the run queue's dequeue interval to 1 s) runs are
launched with the run config `execution: {config: {in_process: {}}}`: the same default executor,
in its in-process mode.
"""

from __future__ import annotations

import sys
from typing import Any

from dagster import Definitions, job, op

JOB_NAME = "bench_noop_10"
LOCATION_NAME = "bench"
STEPS = 10


@op
def first() -> dict[str, Any]:
    return {"n": 1}


@op
def step(payload: dict[str, Any]) -> dict[str, Any]:
    return dict(payload)


@job(name=JOB_NAME)
def chain() -> None:
    payload = first.alias("step1")()
    for i in range(2, STEPS + 1):
        payload = step.alias(f"step{i}")(payload)


defs = Definitions(jobs=[chain])


READY = """
query Ready {
  instance { daemonHealth { daemonStatus(daemonType: "QUEUED_RUN_COORDINATOR") { healthy } } }
  repositoriesOrError { ... on RepositoryConnection { nodes { location { name } jobs { name } } } }
}
"""
RUN_TIMES = """
query RunTimes($runId: ID!) {
  runOrError(runId: $runId) { __typename ... on Run { status startTime endTime } }
}
"""


def measure_main() -> None:
    from urllib.parse import urlparse

    import dagster
    from dagster_graphql import DagsterGraphQLClient
    from driver import measure, measure_args

    args = measure_args(__doc__ or "")
    url = urlparse(args.url)
    client = DagsterGraphQLClient(url.hostname or "127.0.0.1", port_number=url.port, timeout=60)
    final = {"SUCCESS", "FAILURE", "CANCELED"}

    def ready() -> str | None:
        """The webserver must have loaded the job, and the daemon's run-queue loop must be up."""
        data = client._execute(READY)
        jobs = [
            job["name"]
            for repo in data["repositoriesOrError"].get("nodes", [])
            if repo["location"]["name"] == LOCATION_NAME
            for job in repo["jobs"]
        ]
        if JOB_NAME not in jobs:
            return f"job {JOB_NAME} not loaded in code location {LOCATION_NAME} yet"
        if not data["instance"]["daemonHealth"]["daemonStatus"].get("healthy"):
            return "the daemon's QUEUED_RUN_COORDINATOR is not healthy yet"
        return None

    # --tuned: the default executor's other mode, all ops in the run's own process
    run_config = {"execution": {"config": {"in_process": {}}}} if args.tuned else None

    def trigger() -> str:
        return client.submit_job_execution(
            JOB_NAME, repository_location_name=LOCATION_NAME, run_config=run_config
        )

    def status(run_id: str) -> tuple[str | None, float | None]:
        run_status = client.get_run_status(run_id).value
        if run_status not in final:
            return None, None
        if run_status != "SUCCESS":
            return run_status, None
        run = client._execute(RUN_TIMES, {"runId": run_id})["runOrError"]
        return "success", run.get("endTime")

    measure(args, trigger, status, {"version": dagster.__version__, "run_config": run_config}, ready)


if __name__ == "__main__":
    if sys.argv[1:2] == ["measure"]:
        measure_main()
    else:
        sys.exit(f"usage: {sys.argv[0]} measure --url URL --out FILE")
