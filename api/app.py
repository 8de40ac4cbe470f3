"""Application factory. `uvicorn sluice.api.app:create_app --factory` or `sluice api`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from temporalio.client import Client

from sluice import __version__
from sluice.api.auth import redact_access_logs
from sluice.api.body import BodyGuard
from sluice.api.deps import Services
from sluice.api.docs import install_docs
from sluice.api.errors import CorrelationIdMiddleware, install_error_handlers
from sluice.api.responses import document_body_errors
from sluice.api.routes import router
from sluice.auth.oidc import OidcVerifier
from sluice.auth.tokens import TokenService
from sluice.db.engine import SyncTransactions, create_engine, session_factory
from sluice.db.migrate import upgrade
from sluice.handlers.registry import configure_handlers
from sluice.services.backfills import BackfillService
from sluice.services.configs import ConfigService
from sluice.services.dry_runs import DryRunService
from sluice.services.executions import ExecutionService
from sluice.services.gateway import TemporalGateway
from sluice.services.handler_check import HandlerChecker
from sluice.services.idempotency import IdempotencyService
from sluice.services.insights import InsightService
from sluice.services.lineage import LineageService
from sluice.services.logs import EventHub, LogService
from sluice.services.node_data import NodeDataService
from sluice.services.replays import ReplayService
from sluice.services.schedules import ScheduleService
from sluice.services.system import SystemService
from sluice.settings import Settings
from sluice.storage import open_storage
from sluice.tracing import instrument_app

log = logging.getLogger("sluice.api")
RECONCILE_EVERY = 30.0


def create_app(
    settings: Settings | None = None, *, temporal_client: Client | None = None, migrate: bool = True
) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_handlers(settings)
        engine = create_engine(settings)
        if migrate:
            await upgrade(engine)
        sessions = session_factory(engine)
        gateway = TemporalGateway(settings, temporal_client)
        storage = open_storage(settings)
        transactions = SyncTransactions(engine)
        config_service = ConfigService(sessions, HandlerChecker(gateway, settings), transactions)
        executions_service = ExecutionService(sessions, gateway, settings, config_service, transactions)
        log_service = LogService(sessions)
        hub = EventHub(log_service)
        node_data = NodeDataService(sessions, storage)
        system = SystemService(sessions, gateway, settings, storage)
        services = Services(
            settings=settings,
            configs=config_service,
            executions=executions_service,
            gateway=gateway,
            replays=ReplayService(executions_service, config_service, storage, sessions, settings),
            lineage=LineageService(sessions),
            storage=storage,
            logs=log_service,
            hub=hub,
            tokens=TokenService(sessions, transactions),
            idempotency=IdempotencyService(sessions, timedelta(seconds=settings.seconds("idempotency_ttl"))),
            backfills=BackfillService(sessions, gateway, settings, config_service),
            schedules=ScheduleService(sessions, gateway, settings),
            node_data=node_data,
            insights=InsightService(sessions),
            system=system,
            dry_runs=DryRunService(executions_service, node_data, system),
            oidc=OidcVerifier(settings) if settings.auth == "oidc" else None,
        )
        app.state.services = services
        services.schedules.unsynced.update(r.id for r, _ in await services.schedules.scheduled_configs())
        sweeper = asyncio.create_task(_sweep_forever(services))
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await hub.close()
            await storage.close()
            transactions.close()
            await engine.dispose()

    app = FastAPI(
        title="Sluice",
        version=__version__,
        description="Pipeline orchestration on Temporal: configs, executions, stages and replay.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    install_docs(app)
    instrument_app(app, settings)
    redact_access_logs()
    app.add_middleware(BodyGuard)
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Correlation-ID"],
            expose_headers=["X-Correlation-ID"],
        )
    app.add_middleware(CorrelationIdMiddleware)
    install_error_handlers(app)
    app.include_router(router)
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_body_errors(default_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


async def _sweep_forever(services: Services) -> None:
    """Executions whose workflow died outside Sluice become `interrupted` even if nobody reads them;
    expired Idempotency-Keys are forgotten; config schedules that could not be written to Temporal
    are written (all of them once after a start, e.g. on a fresh Temporal)."""
    while True:
        await asyncio.sleep(RECONCILE_EVERY)
        try:
            changed = await services.executions.reconcile_running()
            if changed:
                log.info("reconciled %d execution(s) with Temporal", changed)
            await services.idempotency.purge()
            await services.schedules.retry_unsynced()
        except Exception:
            log.exception("periodic sweep failed")
