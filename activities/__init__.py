"""Activities: everything that touches the outside world (handlers, storage, database).

`build_activities(deps)` returns the bound activity callables the worker registers.
"""

from collections.abc import Callable
from typing import Any

from sluice.activities.child_runs import ChildRunActivities
from sluice.activities.deps import ActivityDeps
from sluice.activities.handlers import check_handlers
from sluice.activities.records import RecordActivities
from sluice.activities.replay import ReplayActivities
from sluice.activities.resume import ResumeActivities
from sluice.activities.routes import RouteActivities


def build_activities(deps: ActivityDeps) -> list[Callable[..., Any]]:
    routes = RouteActivities(deps)
    records = RecordActivities(deps)
    replay = ReplayActivities(deps)
    resume = ResumeActivities(deps)
    children = ChildRunActivities(deps)
    return [
        routes.run_route,
        routes.spill_messages,
        records.finalize_execution,
        replay.list_replay_objects,
        replay.list_replay_keys,
        replay.publish_replay_chunk,
        replay.publish_replay_keys,
        replay.record_replay_published,
        resume.prepare_resume,
        children.prepare_backfill_run,
        children.finish_backfill,
        children.prepare_scheduled_run,
        check_handlers,
    ]


__all__ = ["ActivityDeps", "build_activities"]
