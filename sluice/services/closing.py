"""Closing an execution: its final status, totals, route runs and lifecycle events, in one place.

Two callers: the workflow's last activity (authoritative: it knows every route's outcome, and a
retry rewrites the same state) and reconciliation with Temporal (only closes a record that still
says `running`, e.g. a workflow terminated outside Sluice).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, event, insert, update
from sqlmodel import Session, select

from sluice.clock import duration_ms
from sluice.db.events import ROUTE_FINISHED, execution_finished, insert_events, lifecycle_row
from sluice.db.models import ExecutionRecord, RouteRunRecord
from sluice.db.upsert import execute_many
from sluice.metrics import EXECUTIONS_FINISHED
from sluice.workflow_io import RouteProgress

_TABLE = ExecutionRecord.__table__  # type: ignore[attr-defined]
# Built once: building a statement per close cost more than executing it. The UPDATE sets the
# columns its parameters name.
_FIND = select(  # type: ignore[call-overload]
    _TABLE.c.status,
    _TABLE.c.error,
    _TABLE.c.rows_written,
    _TABLE.c.started_at,
    _TABLE.c.trigger,
    _TABLE.c.pipeline,
).where(_TABLE.c.id == bindparam("execution_id"))
_CLOSE = update(_TABLE).where(_TABLE.c.id == bindparam("execution_id"))
_INSERT_RUNS = insert(RouteRunRecord.__table__)  # type: ignore[arg-type]


def close_execution(
    session: Session,
    execution_id: str,
    *,
    status: str,
    error: str | None,
    completed_at: datetime,
    routes: list[RouteProgress] | None = None,
    authoritative: bool,
) -> str | None:
    """Record the end of an execution in the caller's transaction (synchronous: the worker and the
    API run it whole through `SyncTransactions`). Lifecycle events are written once, on the
    transition out of `running`; a non-authoritative close leaves a finished record alone.

    Returns the status the record holds afterwards (None: no such record). Reads only the columns
    it needs and writes one UPDATE: every execution ends here, and loading the whole record (its
    YAML and JSON columns) through the ORM cost more than the rest of the close."""
    found = session.execute(_FIND, {"execution_id": execution_id}).one_or_none()
    if found is None:
        return None
    closing = found.status == "running"
    if not closing and not authoritative:
        return str(found.status)
    values: dict[str, Any] = {
        "status": status,
        "error": error if authoritative else (found.error or error),
        "completed_at": completed_at,
        "duration_ms": duration_ms(found.started_at, completed_at),
    }
    if routes is not None:
        rows = [r.rows_written for r in routes if r.rows_written is not None]
        values["messages_processed"] = sum(r.messages_processed for r in routes)
        values["objects_written"] = sum(r.objects_written for r in routes)
        values["rows_written"] = sum(rows) if rows else None
        _store_route_runs(session, execution_id, routes, first=closing)
    session.execute(_CLOSE, {"execution_id": execution_id, **values})
    if closing:
        events = [
            _route_finished(execution_id, prog, completed_at)
            for prog in routes or []
            if prog.status in ("completed", "failed", "cancelled")
        ]
        events.append(
            execution_finished(
                execution_id,
                status,
                error=values["error"],
                rows_written=values.get("rows_written", found.rows_written),
                duration_ms=values["duration_ms"],
                timestamp=completed_at,
            )
        )
        insert_events(session, events)
    if closing and found.trigger != "dry-run":
        # Counted once the transaction holding the transition commits (a failed commit is retried).
        finished = EXECUTIONS_FINISHED.labels(found.pipeline, status)
        event.listen(session, "after_commit", lambda _session: finished.inc(), once=True)
    return status


def _store_route_runs(
    session: Session, execution_id: str, routes: list[RouteProgress], *, first: bool
) -> None:
    """`first`: the record is leaving `running`, so no close wrote route runs yet (they are
    written only here, with the status, in one transaction): nothing to look up."""
    if first:
        rows = [RouteRunRecord.values(execution_id, prog) for prog in routes]
        execute_many(session, _INSERT_RUNS, rows)
        return
    existing = {
        r.route: r
        for r in session.exec(select(RouteRunRecord).where(RouteRunRecord.execution_id == execution_id)).all()
    }
    for prog in routes:
        row = existing.get(prog.route) or RouteRunRecord(
            execution_id=execution_id, route=prog.route, status=prog.status
        )
        row.set_progress(prog)
        session.add(row)


def _route_finished(execution_id: str, prog: RouteProgress, fallback: datetime) -> dict[str, Any]:
    retries = f", {prog.retries} retr{'y' if prog.retries == 1 else 'ies'}" if prog.retries else ""
    return lifecycle_row(
        execution_id,
        ROUTE_FINISHED,
        f"route {prog.status}: {prog.messages_processed} message(s) in, {prog.messages_out} out, "
        f"{prog.objects_written} object(s){retries}" + (f": {prog.error}" if prog.error else ""),
        level="error" if prog.status == "failed" else "info",
        route=prog.route,
        data=prog.model_dump(
            mode="json",
            include={
                "status",
                "messages_in",
                "messages_processed",
                "messages_out",
                "objects_written",
                "rows_written",
                "retries",
                "duration_ms",
                "error",
            },
        ),
        timestamp=prog.completed_at or fallback,
    )
