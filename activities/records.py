"""Activities that write execution records: the final status and the per-route runs."""

from __future__ import annotations

from sluice.activities.deps import ActivityDeps
from sqlmodel import select
from temporalio import activity

from sluice.db.events import ROUTE_FINISHED, execution_finished, lifecycle
from sluice.db.models import ExecutionRecord, RouteRunRecord
from sluice.workflow_io import FINALIZE_EXECUTION, FinalizeInput


class RecordActivities:
    def __init__(self, deps: ActivityDeps):
        self.deps = deps

    @activity.defn(name=FINALIZE_EXECUTION)
    async def finalize_execution(self, data: FinalizeInput) -> None:
        """Idempotent: a retry rewrites the same final state."""
        async with self.deps.sessions() as session:
            record = await session.get(ExecutionRecord, data.execution_id)
            if record is None:
                activity.logger.warning("execution %s has no record; nothing to finalize", data.execution_id)
                return
            record.status = data.status
            record.error = data.error
            record.completed_at = data.completed_at
            started = (
                record.started_at
                if record.started_at.tzinfo
                else record.started_at.replace(tzinfo=data.completed_at.tzinfo)
            )
            record.duration_ms = max(int((data.completed_at - started).total_seconds() * 1000), 0)
            record.messages_processed = sum(r.messages_processed for r in data.routes)
            record.objects_written = sum(r.objects_written for r in data.routes)
            rows = [r.rows_written for r in data.routes if r.rows_written is not None]
            record.rows_written = sum(rows) if rows else None
            session.add(record)
            existing = {
                r.route: r
                for r in (
                    await session.exec(
                        select(RouteRunRecord).where(RouteRunRecord.execution_id == data.execution_id)
                    )
                ).all()
            }
            for prog in data.routes:
                row = existing.get(prog.route) or RouteRunRecord(
                    execution_id=data.execution_id, route=prog.route, status=prog.status
                )
                row.position = prog.position
                row.status = prog.status
                row.messages_in = prog.messages_in
                row.messages_processed = prog.messages_processed
                row.messages_out = prog.messages_out
                row.objects_written = prog.objects_written
                row.rows_written = prog.rows_written
                row.retries = prog.retries
                row.error = prog.error
                row.started_at = prog.started_at
                row.completed_at = prog.completed_at
                row.duration_ms = prog.duration_ms
                session.add(row)
            if not existing:  # first finalize attempt: write the lifecycle events once
                for prog in data.routes:
                    if prog.status in ("completed", "failed", "cancelled"):
                        session.add(
                            lifecycle(
                                data.execution_id,
                                ROUTE_FINISHED,
                                f"route {prog.status}: {prog.messages_processed} message(s) in, "
                                f"{prog.messages_out} out, {prog.objects_written} object(s)"
                                + (
                                    f", {prog.retries} retr{'y' if prog.retries == 1 else 'ies'}"
                                    if prog.retries
                                    else ""
                                )
                                + (f": {prog.error}" if prog.error else ""),
                                level="error" if prog.status == "failed" else "info",
                                route=prog.route,
                                data={
                                    "status": prog.status,
                                    "messages_in": prog.messages_in,
                                    "messages_processed": prog.messages_processed,
                                    "messages_out": prog.messages_out,
                                    "objects_written": prog.objects_written,
                                    "rows_written": prog.rows_written,
                                    "retries": prog.retries,
                                    "duration_ms": prog.duration_ms,
                                    "error": prog.error,
                                },
                                timestamp=prog.completed_at or data.completed_at,
                            )
                        )
                session.add(
                    execution_finished(
                        data.execution_id,
                        data.status,
                        error=data.error,
                        rows_written=record.rows_written,
                        duration_ms=record.duration_ms,
                        timestamp=data.completed_at,
                    )
                )
            await session.commit()
