"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sluice import __version__
from sluice.api.auth import Viewer
from sluice.api.deps import ServicesDep
from sluice.api.responses import AUTH, error
from sluice.metrics import EXECUTIONS_IN_FLIGHT
from sluice.services.readiness import check_readiness

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@router.get("/ready", responses={**AUTH, 503: error("A dependency is not reachable")})
async def ready(services: ServicesDep, _: Viewer) -> JSONResponse:
    """Readiness: 200 when the database and Temporal answer, 503 otherwise (needs a credential:
    it tells how the deployment is wired)."""
    checks = await check_readiness(services.configs.sessions, services.gateway)
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        status_code=200 if ok else 503, content={"status": "ok" if ok else "degraded", **checks}
    )


@router.get("/metrics", include_in_schema=False)
async def metrics(services: ServicesDep, _: Viewer) -> Response:
    """Prometheus metrics of this API process (a viewer credential, like every read): starts,
    finishes it recorded, executions in flight (counted now, across all processes)."""
    EXECUTIONS_IN_FLIGHT.set(await services.executions.running_count())
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
