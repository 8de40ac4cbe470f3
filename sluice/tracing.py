"""OpenTelemetry tracing, off unless SLUICE_TRACING is set: the API's FastAPI app is instrumented
and temporalio's TracingInterceptor rides on every Temporal client Sluice makes (so on its workers
too), so one trace runs from an HTTP request through the workflow into each route activity.

`otlp` exports with the standard OTEL_EXPORTER_OTLP_* variables (endpoint, headers); `console`
prints spans (for a look without a collector).
"""

from __future__ import annotations

from typing import Any

from sluice.settings import Settings


def setup_tracing(settings: Settings, service_name: str) -> None:
    """Install the process's tracer provider (once; a provider set before, e.g. by a test, stays)."""
    if settings.tracing == "none":
        return
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if settings.tracing == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)


def client_interceptors(settings: Settings) -> list[Any]:
    if settings.tracing == "none":
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor()]


def instrument_app(app: Any, settings: Settings) -> None:
    if settings.tracing == "none":
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, excluded_urls="health,metrics")
