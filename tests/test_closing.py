"""Closing an execution's record, on SQLite and on PostgreSQL: the final status and totals, the
route runs, and the lifecycle events written once however often the close is repeated."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import Session, select

from sluice.db.engine import SyncTransactions
from sluice.db.models import ExecutionLogRecord, ExecutionRecord, RouteRunRecord
from sluice.services.closing import close_execution
from sluice.workflow_io import RouteProgress

STARTED = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def transactions(migrated_engine: AsyncEngine) -> Iterator[SyncTransactions]:
    runner = SyncTransactions(migrated_engine)
    yield runner
    runner.close()


async def running(transactions: SyncTransactions, *, trigger: str = "manual") -> str:
    execution_id = str(uuid.uuid4())

    def add(session: Session) -> None:
        session.add(
            ExecutionRecord(
                id=execution_id,
                config_id=str(uuid.uuid4()),
                config_version=1,
                config_yaml="name: p\n",
                config_hash="h",
                pipeline="p",
                namespace="n",
                layer="l",
                status="running",
                trigger=trigger,
                workflow_id=f"sluice-exec-{execution_id}",
                task_queue="q",
                created_at=STARTED,
                started_at=STARTED,
            )
        )

    await transactions.run(add)
    return execution_id


def routes(*, failed: bool = False) -> list[RouteProgress]:
    return [
        RouteProgress(
            route="load",
            position=0,
            status="completed",
            messages_in=1,
            messages_processed=1,
            messages_out=3,
            objects_written=3,
            rows_written=10,
        ),
        RouteProgress(
            route="sink",
            position=1,
            status="failed" if failed else "completed",
            messages_in=3,
            messages_processed=2 if failed else 3,
            messages_failed=1 if failed else 0,
            rows_written=5,
            error="boom" if failed else None,
        ),
    ]


async def close(transactions: SyncTransactions, execution_id: str, **kwargs: object) -> str | None:
    return await transactions.run(lambda session: close_execution(session, execution_id, **kwargs))  # type: ignore[arg-type]


async def stored(
    transactions: SyncTransactions, execution_id: str
) -> tuple[ExecutionRecord, list[RouteRunRecord], list[ExecutionLogRecord]]:
    def read(session: Session) -> tuple[ExecutionRecord, list[RouteRunRecord], list[ExecutionLogRecord]]:
        record = session.get(ExecutionRecord, execution_id)
        assert record is not None
        runs = session.exec(
            select(RouteRunRecord)
            .where(RouteRunRecord.execution_id == execution_id)
            .order_by(RouteRunRecord.position)
        ).all()
        events = session.exec(
            select(ExecutionLogRecord)
            .where(ExecutionLogRecord.execution_id == execution_id)
            .order_by(ExecutionLogRecord.id)
        ).all()
        return record, list(runs), list(events)

    return await transactions.run(read)


async def test_the_workflows_close_records_status_totals_route_runs_and_events_once(
    transactions: SyncTransactions,
) -> None:
    execution_id = await running(transactions)
    completed = STARTED + timedelta(seconds=2, milliseconds=500)
    status = await close(
        transactions,
        execution_id,
        status="failed",
        error="route sink failed",
        completed_at=completed,
        routes=routes(failed=True),
        authoritative=True,
    )
    assert status == "failed"
    record, runs, events = await stored(transactions, execution_id)
    assert (record.status, record.error, record.duration_ms) == ("failed", "route sink failed", 2500)
    assert record.completed_at is not None and record.completed_at.replace(tzinfo=UTC) == completed
    assert (record.messages_processed, record.objects_written, record.rows_written) == (3, 3, 15)
    assert record.config_yaml == "name: p\n"  # the columns a close does not write are left alone
    assert [(r.route, r.status, r.messages_processed, r.messages_failed) for r in runs] == [
        ("load", "completed", 1, 0),
        ("sink", "failed", 2, 1),
    ]
    assert [e.event for e in events] == ["route.finished", "route.finished", "execution.finished"]
    assert events[-1].data == {
        "status": "failed",
        "rows_written": 15,
        "duration_ms": 2500,
        "error": "route sink failed",
    }
    assert events[1].level == "error" and "boom" in events[1].message

    # A retried finalize rewrites the same final state and adds no second set of events.
    again = await close(
        transactions,
        execution_id,
        status="completed",
        error=None,
        completed_at=completed,
        routes=routes(),
        authoritative=True,
    )
    assert again == "completed"
    record, runs, events = await stored(transactions, execution_id)
    assert (record.status, record.error, record.messages_processed) == ("completed", None, 4)
    assert [(r.route, r.status) for r in runs] == [("load", "completed"), ("sink", "completed")]
    assert len(events) == 3


async def test_reconciliation_closes_only_a_running_record_and_keeps_its_totals(
    transactions: SyncTransactions,
) -> None:
    execution_id = await running(transactions)
    lost = STARTED + timedelta(minutes=1)
    status = await close(
        transactions,
        execution_id,
        status="interrupted",
        error="workflow not found in Temporal",
        completed_at=lost,
        authoritative=False,
    )
    assert status == "interrupted"
    record, runs, events = await stored(transactions, execution_id)
    assert (record.status, record.duration_ms, record.messages_processed, record.rows_written) == (
        "interrupted",
        60_000,
        0,
        None,
    )
    assert runs == []
    assert [e.event for e in events] == ["execution.finished"]
    assert events[0].level == "error"

    # Once finished, a later non-authoritative close changes nothing and reports what is there.
    later = await close(
        transactions,
        execution_id,
        status="cancelled",
        error="other",
        completed_at=lost + timedelta(minutes=1),
        authoritative=False,
    )
    assert later == "interrupted"
    record, _, events = await stored(transactions, execution_id)
    assert (record.status, record.error, record.duration_ms, len(events)) == (
        "interrupted",
        "workflow not found in Temporal",
        60_000,
        1,
    )


async def test_closing_a_record_that_does_not_exist_reports_none(transactions: SyncTransactions) -> None:
    missing = str(uuid.uuid4())
    assert (
        await close(
            transactions,
            missing,
            status="completed",
            error=None,
            completed_at=STARTED,
            routes=[],
            authoritative=True,
        )
        is None
    )
