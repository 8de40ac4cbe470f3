"""Metrics and traces: counters after a run on the API's /metrics and a worker's port, Temporal's
SDK metrics, and one trace from the HTTP request through the workflow into each route activity."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.contrib.pydantic import pydantic_data_converter

from sluice.runtime.devstack import free_ports
from tests.conftest import Stack, StackFactory, start_worker, wait_until_polling

PIPELINE = """
name: measured
init_message: {route: load, payload: {count: 3}}
routes:
  - {name: load, handler: "tests.handlers:fanout", stage: raw, next: [copy]}
  - {name: copy, handler: "tests.handlers:copy", stage: copied}
"""


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(metrics: dict, name: str, **labels: str) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_api_metrics_count_a_run(stack: Stack) -> None:
    before = samples((await stack.http.get("/metrics")).text)
    config = await stack.create_config(PIPELINE)
    done = await stack.wait((await stack.run(config["id"])).json()["id"])
    assert done["status"] == "completed"
    resp = await stack.http.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    after = samples(resp.text)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("sluice_executions_started_total", pipeline="measured", trigger="manual") == 1
    # In-process worker: its counters share this registry (a separate worker serves its own port).
    assert delta("sluice_executions_finished_total", pipeline="measured", status="completed") == 1
    assert delta("sluice_messages_processed_total", pipeline="measured", route="copy") == 3
    assert delta("sluice_objects_written_total", pipeline="measured", route="load") == 3
    assert (
        delta("sluice_route_batch_seconds_count", pipeline="measured", route="load", outcome="success") == 1
    )
    assert value(after, "sluice_executions_in_flight") == 0


async def test_a_worker_serves_its_metrics_and_temporals(make_stack: StackFactory, tmp_path: Path) -> None:
    stack = await make_stack(worker=False)
    port, sdk_port = free_ports(2)
    worker = start_worker(
        stack, tmp_path / "w.log", SLUICE_METRICS_PORT=str(port), SLUICE_TEMPORAL_METRICS_PORT=str(sdk_port)
    )
    try:
        await wait_until_polling([tmp_path / "w.log"])
        config = await stack.create_config(PIPELINE)
        done = await stack.wait((await stack.run(config["id"])).json()["id"])
        assert done["status"] == "completed"
        async with httpx.AsyncClient(timeout=10) as http:
            mine = samples((await http.get(f"http://127.0.0.1:{port}/metrics")).text)
            sdk = (await http.get(f"http://127.0.0.1:{sdk_port}/metrics")).text
    finally:
        worker.terminate()
        await asyncio.to_thread(worker.wait, 30)
    assert value(mine, "sluice_executions_finished_total", pipeline="measured", status="completed") == 1
    assert (
        value(mine, "sluice_route_batch_seconds_count", pipeline="measured", route="copy", outcome="success")
        >= 1
    )
    assert value(mine, "sluice_messages_processed_total", pipeline="measured", route="copy") == 3
    assert "temporal_" in sdk and "activity" in sdk  # the SDK's own metrics


async def test_one_trace_from_request_to_activities(make_stack: StackFactory, temporal_address: str) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    client = await Client.connect(
        temporal_address, data_converter=pydantic_data_converter, interceptors=[TracingInterceptor()]
    )
    stack = await make_stack(client=client, tracing="console")
    config = await stack.create_config(PIPELINE)
    exporter.clear()
    execution_id = (await stack.run(config["id"])).json()["id"]
    assert (await stack.wait(execution_id))["status"] == "completed"
    await asyncio.sleep(0.5)
    spans = exporter.get_finished_spans()
    http_span = next(s for s in spans if s.name.startswith("POST /api/v1/configs/{config_id}/run"))
    in_trace = [s for s in spans if s.context.trace_id == http_span.context.trace_id]
    names = {s.name for s in in_trace}
    assert "StartWorkflow:ExecutionWorkflow" in names and "RunWorkflow:ExecutionWorkflow" in names
    assert "StartActivity:sluice.run_route" in names and "RunActivity:sluice.run_route" in names
    runs = [s for s in in_trace if s.name == "RunActivity:sluice.run_route"]
    assert len(runs) == 2  # one batch of `load`, one of `copy`, both in the request's trace
