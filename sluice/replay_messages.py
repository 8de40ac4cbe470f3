"""A replay's message for each of its keys, derived rather than stored.

The same key always yields the same message (its id derives from the replay batch and the key),
so a retried batch, a resume and the publishing of replays started before derivation agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sluice.ids import ClusteredIds, derived_id
from sluice.storage.keys import stage_prefix
from sluice.workflow_io import ReplayKeys


class ReplayMessages:
    """Builds the messages of one replay for one execution (stage prefixes computed once per owner)."""

    def __init__(self, execution_id: str, replay: ReplayKeys):
        self.execution_id, self.replay = execution_id, replay
        self._prefixes: dict[str, str] = {}  # owner execution -> its stage prefix
        self._clustered = ClusteredIds(replay.replay_batch_id) if replay.clustered_ids else None

    def correlation_id(self, key: str) -> str:
        if self._clustered is not None:
            return self._clustered.id(key)
        return derived_id(self.replay.replay_batch_id, key)

    def message(self, key: str) -> dict[str, Any]:
        """The message for `key`, as a dict of Message's shape (what a page line holds)."""
        return self.messages((key,))[0]

    def messages(self, keys: Iterable[str]) -> list[dict[str, Any]]:
        """`message` for each key: a batch derives its slice of a page at once (what the keys
        share is looked up once)."""
        replay = self.replay
        execution_id, batch_id, stage, extra = (
            self.execution_id,
            replay.replay_batch_id,
            replay.stage,
            replay.metadata,
        )
        correlation_id, stage_of = self.correlation_id, self._stage_of
        out = []
        for key in keys:
            metadata = {
                "execution_id": execution_id,
                "correlation_id": correlation_id(key),
                "parent_correlation_id": None,
                "replay_batch_id": batch_id,
                "source_route": None,
            }
            if extra:
                metadata["replay_metadata"] = extra
            payload = {"object_key": key, "stage": stage, "path": key.removeprefix(stage_of(key))}
            out.append({"payload": payload, "metadata": metadata})
        return out

    def _stage_of(self, key: str) -> str:
        owner = key.split("/", 1)[0]
        prefix = self._prefixes.get(owner)
        if prefix is None:
            prefix = self._prefixes[owner] = stage_prefix(owner, self.replay.stage)
        return prefix
