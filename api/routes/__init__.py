"""One router per resource, aggregated once here (the full-stack-fastapi-template pattern).

The versioned REST API lives under `API_PREFIX`; liveness probes and the seed-002 WebSocket keep
their own paths. Routers never import each other: shared pieces live in `sluice.api.deps`,
`schemas`, `logs` and `body`.
"""

from fastapi import APIRouter

from sluice.api.routes import configs, executions, health, replay, runs, ws

API_PREFIX = "/api/v1"

api_router = APIRouter(prefix=API_PREFIX)
for _module in (configs, executions, replay, runs):
    api_router.include_router(_module.router)

router = APIRouter()
router.include_router(health.router)
router.include_router(api_router)
router.include_router(ws.router)
