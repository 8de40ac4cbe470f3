"""/api/v1/backfills: a backfill's per-date progress, and cancelling it as a whole."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from sluice.api.auth import Operator, Viewer
from sluice.api.deps import ServicesDep
from sluice.api.responses import CONFLICT, NOT_FOUND, UNAVAILABLE
from sluice.api.schemas import BackfillResponse

router = APIRouter(prefix="/backfills", tags=["backfills"])

BackfillRef = Annotated[str, Path(min_length=1, max_length=64, description="Backfill id")]


@router.get("/{backfill_id}", response_model=BackfillResponse, responses=NOT_FOUND)
async def get_backfill(backfill_id: BackfillRef, services: ServicesDep, _: Viewer) -> BackfillResponse:
    """Each date with its run id and status (`pending` until the backfill starts it)."""
    return BackfillResponse.of(await services.backfills.get(backfill_id))


@router.post(
    "/{backfill_id}/cancel",
    response_model=BackfillResponse,
    responses={
        **NOT_FOUND,
        202: {"model": BackfillResponse, "description": "Cancellation requested, runs still stopping"},
        **CONFLICT,
        **UNAVAILABLE,
    },
)
async def cancel_backfill(
    backfill_id: BackfillRef, services: ServicesDep, response: Response, _: Operator
) -> BackfillResponse:
    """Cancel the runs in flight and start no more dates."""
    view = await services.backfills.cancel(backfill_id)
    if view.record.status == "running":
        response.status_code = status.HTTP_202_ACCEPTED
    return BackfillResponse.of(view)
