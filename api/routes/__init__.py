"""One router per resource, aggregated once here (the full-stack-fastapi-template pattern).

The versioned REST API lives under `API_PREFIX`; liveness probes, seed 002's run API and its
WebSocket keep their own paths (the WebSocket authenticates in its handshake; only `/health` is open). Routers never import each other: shared pieces live in `sluice.api.deps`,
`schemas`, `logs` and `body`.
"""

from fastapi import APIRouter, Depends

from sluice.api.auth import require
from sluice.api.deps import API_PREFIX
from sluice.api.responses import AUTH, UNPROCESSABLE
from sluice.api.routes import (
    backfills,
    configs,
    executions,
    health,
    insights,
    pipeline_runs,
    replay,
    runs,
    scheduler,
    tokens,
    ws,
)
from sluice.auth.roles import Role

# Every route under the prefix needs at least a viewer: an endpoint that forgets its own role
# check is still never open.
api_router = APIRouter(
    prefix=API_PREFIX, dependencies=[Depends(require(Role.viewer))], responses={**AUTH, **UNPROCESSABLE}
)
for _module in (backfills, configs, executions, replay, runs, tokens):
    api_router.include_router(_module.router)

# Seed 002's run API keeps its own paths (/api/pipelines, /api/runs) under the same rules.
seed_002_router = APIRouter(dependencies=[Depends(require(Role.viewer))], responses={**AUTH, **UNPROCESSABLE})
seed_002_router.include_router(insights.router)  # before /api/runs/{run_id}: /api/runs/calendar
seed_002_router.include_router(pipeline_runs.pipelines)
seed_002_router.include_router(pipeline_runs.runs)
seed_002_router.include_router(scheduler.router)

router = APIRouter()
router.include_router(health.router)
router.include_router(api_router)
router.include_router(seed_002_router)
router.include_router(ws.router)
