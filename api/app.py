"""Application factory. `uvicorn api.app:create_app --factory` or `sluice api`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from temporalio.client import Client

from sluice import __version__
from sluice.api.deps import Services
from sluice.api.errors import CorrelationIdMiddleware, install_error_handlers
from sluice.api.routes import router
from sluice.db.engine import create_engine, session_factory
from sluice.db.migrate import upgrade
from sluice.handlers.registry import add_import_paths, allow_modules
from sluice.services.configs import ConfigService
from sluice.services.executions import ExecutionService
from sluice.services.gateway import TemporalGateway
from sluice.services.lineage import LineageService
from sluice.services.logs import EventHub, LogService
from sluice.services.replays import ReplayService
from sluice.settings import Settings
from sluice.storage import open_storage

log = logging.getLogger("sluice.api")
RECONCILE_EVERY = 30.0


def create_app(
    settings: Settings | None = None, *, temporal_client: Client | None = None, migrate: bool = True
) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        add_import_paths(settings.handler_paths)
        allow_modules(settings.handler_modules)
        engine = create_engine(settings)
        if migrate:
            await upgrade(engine)
        sessions = session_factory(engine)
        gateway = TemporalGateway(settings, temporal_client)
        storage = open_storage(settings)
        config_service = ConfigService(sessions)
        executions_service = ExecutionService(sessions, gateway, settings, config_service)
        log_service = LogService(sessions)
        hub = EventHub(log_service)
        app.state.services = Services(
            settings=settings,
            configs=config_service,
            executions=executions_service,
            gateway=gateway,
            replays=ReplayService(executions_service, config_service, storage, sessions, settings),
            lineage=LineageService(sessions),
            storage=storage,
            logs=log_service,
            hub=hub,
        )
        sweeper = asyncio.create_task(_reconcile_forever(app.state.services.executions))
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await hub.close()
            await storage.close()
            await engine.dispose()

    app = FastAPI(
        title="Sluice",
        version=__version__,
        description="Pipeline orchestration on Temporal: configs, executions, stages and replay.",
        lifespan=lifespan,
    )
    app.add_middleware(CorrelationIdMiddleware)
    install_error_handlers(app)
    app.include_router(router)
    return app


async def _reconcile_forever(service: ExecutionService) -> None:
    """Executions whose workflow died outside Sluice become `interrupted` even if nobody reads them."""
    while True:
        await asyncio.sleep(RECONCILE_EVERY)
        try:
            changed = await service.reconcile_running()
            if changed:
                log.info("reconciled %d execution(s) with Temporal", changed)
        except Exception:
            log.exception("reconcile sweep failed")
