"""Injected services (the full-stack-fastapi-template `deps` pattern), and the Idempotency-Key
reservation every start endpoint shares."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request

from sluice.auth.oidc import OidcVerifier
from sluice.auth.roles import Principal
from sluice.auth.tokens import TokenService
from sluice.services.backfills import BackfillService
from sluice.services.configs import ConfigService
from sluice.services.dry_runs import DryRunService
from sluice.services.executions import ExecutionService
from sluice.services.gateway import TemporalGateway
from sluice.services.idempotency import IdempotencyService
from sluice.services.insights import InsightService
from sluice.services.lineage import LineageService
from sluice.services.logs import EventHub, LogService
from sluice.services.node_data import NodeDataService
from sluice.services.replays import ReplayService
from sluice.services.schedules import ScheduleService
from sluice.services.system import SystemService
from sluice.settings import Settings
from sluice.storage import ObjectStorage

API_PREFIX = "/api/v1"  # the versioned REST API; seed 002's run API keeps its own /api paths


@dataclass
class Services:
    settings: Settings
    configs: ConfigService
    executions: ExecutionService
    gateway: TemporalGateway
    replays: ReplayService
    lineage: LineageService
    storage: ObjectStorage
    logs: LogService
    hub: EventHub
    tokens: TokenService
    idempotency: IdempotencyService
    backfills: BackfillService
    schedules: ScheduleService
    node_data: NodeDataService
    insights: InsightService
    system: SystemService
    dry_runs: DryRunService
    oidc: OidcVerifier | None = None


async def get_services(request: Request) -> Services:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a thread hop per request.
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        description="Retry-safe start: a retry with the same key and request returns the same execution "
        "(kept at least 24 h); the same key with a different request gets 422",
    ),
]


async def reserved_execution(
    request: Request, services: Services, principal: Principal, key: str | None
) -> str | None:
    """The execution id an Idempotency-Key stands for (None without the header)."""
    if key is None:
        return None
    digest = hashlib.sha256()
    digest.update(
        f"{request.method} {request.url.path}?{sorted(request.query_params.multi_items())}\n".encode()
    )
    digest.update(await request.body())
    return await services.idempotency.reserve(principal.name, key, digest.hexdigest())
