"""Prometheus metrics (prometheus-client): what the API exposes at /metrics and each worker on
SLUICE_METRICS_PORT, beside Temporal's own SDK metrics (SLUICE_TEMPORAL_METRICS_PORT).

Counters count in the process that does the work: starts where runs start (the API, or a worker
for backfills and schedules), finishes where they are recorded (a worker's last activity, or the
API when it reconciles a workflow that died); sum them across processes in Prometheus.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger("sluice.metrics")

EXECUTIONS_STARTED = Counter("sluice_executions_started_total", "Executions started", ["pipeline", "trigger"])
EXECUTIONS_FINISHED = Counter(
    "sluice_executions_finished_total", "Executions that reached a final status", ["pipeline", "status"]
)
EXECUTIONS_IN_FLIGHT = Gauge(
    "sluice_executions_in_flight", "Executions running now (as the API last counted)"
)
ROUTE_BATCH_SECONDS = Histogram(
    "sluice_route_batch_seconds",
    "Time one route batch (activity attempt) took",
    ["pipeline", "route", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
MESSAGES_PROCESSED = Counter(
    "sluice_messages_processed_total", "Messages handled by routes", ["pipeline", "route"]
)
OBJECTS_WRITTEN = Counter("sluice_objects_written_total", "Objects stored by routes", ["pipeline", "route"])
REPLAY_OBJECTS_PUBLISHED = Counter(
    "sluice_replay_objects_published_total", "Stored objects published as messages by replays", ["to_route"]
)


def trigger_label(trigger: str) -> str:
    """Triggers without their ids (`backfill:<uuid>` → `backfill`): labels stay few."""
    kind = trigger.split(":", 1)[0]
    return trigger if kind == "schedule" else kind


def serve(port: int | None, what: str) -> None:
    """Expose this process's metrics on `port` (unset: not at all)."""
    if not port:
        return
    try:
        start_http_server(port)
        log.info("%s metrics on :%d/metrics", what, port)
    except OSError as exc:  # another worker on this machine has the port
        log.warning("%s metrics not served on :%d: %s", what, port, exc)
