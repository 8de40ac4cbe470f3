"""A replay's handled messages are stored one row per batch and read back as one row per message,
on SQLite and on PostgreSQL, next to the per-message rows of replays recorded before."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select

from sluice.db.engine import SyncTransactions, session_factory
from sluice.db.models import LineageRecord, ReplayLineageRecord
from sluice.ids import derived_id
from sluice.messages import Message
from sluice.replay_messages import ReplayMessages
from sluice.services.lineage import Emission, LineageService, LineageWriter, lineage_rows
from sluice.workflow_io import ReplayKeys


def derived(execution_id: str, replay: ReplayKeys, keys: list[str]) -> list[Message]:
    derive = ReplayMessages(execution_id, replay)
    return [Message.model_validate(derive.message(key)) for key in keys]


async def test_a_replays_batches_read_back_as_the_messages_they_handled(migrated_engine: AsyncEngine) -> None:
    execution, source = str(uuid.uuid4()), str(uuid.uuid4())
    replay = ReplayKeys(replay_batch_id=str(uuid.uuid4()), stage="raw", clustered_ids=True)
    keys = [f"{source}/raw/doc-{i:02d}.txt" for i in range(7)]
    first, second = derived(execution, replay, keys[:4]), derived(execution, replay, keys[4:])
    outputs = [
        Emission(
            correlation_id=derived_id(m.metadata.correlation_id, "out"),
            parent_correlation_id=m.metadata.correlation_id,
            route="copy",
            source_route="copy",
            stage="copied",
            object_key=f"{execution}/copied/{i}.txt",
            replay_batch_id=replay.replay_batch_id,
        )
        for i, m in enumerate(first + second)
    ]
    transactions = SyncTransactions(migrated_engine)
    writer = LineageWriter(transactions)
    try:
        await writer.record(execution, outputs[:4], route="copy", processed=first, replay=replay)
        await writer.record(execution, outputs[4:], route="copy", processed=second, replay=replay)
        # A retried batch records its keys again: nothing doubles.
        await writer.record(execution, outputs[:4], route="copy", processed=first, replay=replay)
    finally:
        transactions.close()

    sessions = session_factory(migrated_engine)
    async with sessions() as session:
        stored = (
            await session.exec(select(LineageRecord).where(LineageRecord.execution_id == execution))
        ).all()
        batches = (
            await session.exec(
                select(ReplayLineageRecord).where(ReplayLineageRecord.execution_id == execution)
            )
        ).all()
        rows = await lineage_rows(session, execution)
    assert len(stored) == 7 and all(r.source_route == "copy" for r in stored)  # outputs only
    assert sorted(len(b.object_keys) for b in batches) == [3, 4]

    messages = [r for r in rows if r.source_route is None]
    assert len(rows) == 14 and len(messages) == 7
    by_key = {r.object_key: r for r in messages}
    for m in first + second:
        row = by_key[m.object_key]
        assert row.correlation_id == m.metadata.correlation_id
        assert row.payload == m.payload and row.processed_at is not None
        assert (row.route, row.stage, row.replay_batch_id) == ("copy", "raw", replay.replay_batch_id)
    assert [(r.created_at, r.correlation_id) for r in rows] == sorted(
        (r.created_at, r.correlation_id) for r in rows
    )

    graph = await LineageService(sessions).execution_graph(execution, limit=100)
    assert {(e[0], e[1]) for e in graph.edges} == {
        (o.parent_correlation_id, o.correlation_id) for o in outputs
    }
    assert len((await LineageService(sessions).execution_graph(execution, limit=5)).nodes) == 5
    chain = await LineageService(sessions).ancestry(execution, outputs[5].object_key or "")
    assert [n.correlation_id for n in chain.nodes] == [
        outputs[5].correlation_id,
        second[1].metadata.correlation_id,
    ]


async def test_replays_recorded_before_keep_their_rows_and_their_ids(migrated_engine: AsyncEngine) -> None:
    """A replay recorded one row per message (uuid5 ids) before; a batch of the same execution
    recorded now (a resumed or retried batch of an old replay) reads back beside them."""
    execution, source = str(uuid.uuid4()), str(uuid.uuid4())
    replay = ReplayKeys(replay_batch_id=str(uuid.uuid4()), stage="raw", clustered_ids=False)
    old, new = (
        derived(execution, replay, [f"{source}/raw/a.txt"]),
        derived(execution, replay, [f"{source}/raw/b.txt"]),
    )
    transactions = SyncTransactions(migrated_engine)
    writer = LineageWriter(transactions)
    try:
        await writer.record(execution, [], route="copy", processed=old)  # as a per-message row
        await writer.record(execution, [], route="copy", processed=new, replay=replay)
    finally:
        transactions.close()
    async with session_factory(migrated_engine)() as session:
        rows = await lineage_rows(session, execution)
    assert sorted(r.correlation_id for r in rows) == sorted(
        derived_id(replay.replay_batch_id, key) for key in (f"{source}/raw/a.txt", f"{source}/raw/b.txt")
    )
    assert all(r.processed_at is not None and r.source_route is None for r in rows)
