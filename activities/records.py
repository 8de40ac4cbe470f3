"""Activities that write execution records: the final status and the per-route runs."""

from __future__ import annotations

from temporalio import activity

from sluice.activities.deps import ActivityDeps
from sluice.services.closing import close_execution
from sluice.workflow_io import FINALIZE_EXECUTION, FinalizeInput


class RecordActivities:
    def __init__(self, deps: ActivityDeps):
        self.deps = deps

    @activity.defn(name=FINALIZE_EXECUTION)
    async def finalize_execution(self, data: FinalizeInput) -> None:
        """Idempotent: a retry rewrites the same final state (and never repeats lifecycle events)."""
        status = await self.deps.transactions.run(
            lambda session: close_execution(
                session,
                data.execution_id,
                status=data.status,
                error=data.error,
                completed_at=data.completed_at,
                routes=data.routes,
                authoritative=True,
            )
        )
        if status is None:
            activity.logger.warning("execution %s has no record; nothing to finalize", data.execution_id)
