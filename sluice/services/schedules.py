"""A config's `schedule` as a Temporal Schedule it owns: created, updated, paused and deleted with
the config, visible on the Temporal UI's Schedules page. Each firing starts a ScheduledRunWorkflow
(workflows/scheduled_run.py), which runs the config's latest version with trigger
`schedule:<cron>`.

The config is the source of truth: writing it sets the schedule (including `paused`); pausing
through the API holds until the config is written again. Syncs that fail (Temporal down) are
retried by the API's periodic sweep.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import (
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

from sluice.db.models import PipelineConfigRecord
from sluice.durations import parse_duration
from sluice.errors import FailedPreconditionError, NotFoundError, UnavailableError
from sluice.pipeline_config import PipelineConfig, ScheduleConfig
from sluice.services.gateway import TemporalGateway
from sluice.settings import Settings
from sluice.workflow_io import SCHEDULED_RUN_WORKFLOW, ScheduledRunInput, schedule_id_for

log = logging.getLogger("sluice.schedules")

OVERLAP = {
    "skip": ScheduleOverlapPolicy.SKIP,
    "buffer_one": ScheduleOverlapPolicy.BUFFER_ONE,
    "allow_all": ScheduleOverlapPolicy.ALLOW_ALL,
    "cancel_other": ScheduleOverlapPolicy.CANCEL_OTHER,
}


@dataclass
class ScheduleStatus:
    config: PipelineConfigRecord
    spec: ScheduleConfig
    next_run: datetime | None
    last_run: datetime | None
    enabled: bool
    in_temporal: bool
    note: str | None = None


def spec_of(record: PipelineConfigRecord) -> ScheduleConfig | None:
    return PipelineConfig.from_snapshot(record.yaml).schedule_spec()


class ScheduleService:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], gateway: TemporalGateway, settings: Settings
    ):
        self.sessions = sessions
        self.gateway = gateway
        self.settings = settings
        self.unsynced: set[str] = set()

    def _schedule(self, record: PipelineConfigRecord, spec: ScheduleConfig) -> Schedule:
        return Schedule(
            action=ScheduleActionStartWorkflow(
                SCHEDULED_RUN_WORKFLOW,
                ScheduledRunInput(config_id=record.id, trigger=f"schedule:{spec.describe()}"[:64]),
                id=f"sluice-scheduled-{record.id}",
                task_queue=self.settings.task_queue,
                static_summary=f"scheduled run of {record.namespace}.{record.layer}.{record.name}",
            ),
            spec=ScheduleSpec(
                cron_expressions=[spec.cron] if spec.cron else [],
                intervals=[ScheduleIntervalSpec(every=parse_duration(spec.every))] if spec.every else [],
                time_zone_name=spec.timezone,
            ),
            policy=SchedulePolicy(
                overlap=OVERLAP[spec.overlap], catchup_window=parse_duration(spec.catchup_window)
            ),
            state=ScheduleState(paused=spec.paused, note=f"config {record.id} version {record.version}"),
        )

    async def sync(self, record: PipelineConfigRecord) -> bool:
        """Make the config's Temporal Schedule match its YAML; False (and retried later) when
        Temporal cannot be reached."""
        try:
            spec = spec_of(record)
            client = await self.gateway.client()
            handle = client.get_schedule_handle(schedule_id_for(record.id))
            if spec is None:
                await self._delete(record.id)
            else:
                schedule = self._schedule(record, spec)
                try:
                    await client.create_schedule(schedule_id_for(record.id), schedule)
                except ScheduleAlreadyRunningError:

                    def replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
                        return ScheduleUpdate(schedule=schedule)

                    await handle.update(replace)
        except (RPCError, UnavailableError) as exc:
            log.warning("schedule of config %s not synced with Temporal (will retry): %s", record.id, exc)
            self.gateway.forget()
            self.unsynced.add(record.id)
            return False
        self.unsynced.discard(record.id)
        return True

    async def delete(self, config_id: str) -> None:
        try:
            await self._delete(config_id)
        except (RPCError, UnavailableError) as exc:
            log.warning("schedule of deleted config %s not removed (will retry): %s", config_id, exc)
            self.gateway.forget()
            self.unsynced.add(config_id)
        else:
            self.unsynced.discard(config_id)

    async def _delete(self, config_id: str) -> None:
        client = await self.gateway.client()
        try:
            await client.get_schedule_handle(schedule_id_for(config_id)).delete()
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise

    async def retry_unsynced(self) -> None:
        """What the API's sweep calls: configs whose schedule could not be written before."""
        for config_id in list(self.unsynced):
            async with self.sessions() as session:
                record = await session.get(PipelineConfigRecord, config_id)
            if record is None:
                await self.delete(config_id)
            else:
                await self.sync(record)

    async def scheduled_configs(self) -> list[tuple[PipelineConfigRecord, ScheduleConfig]]:
        async with self.sessions() as session:
            records = (
                await session.exec(select(PipelineConfigRecord).order_by(col(PipelineConfigRecord.name)))
            ).all()
        found = []
        for record in records:
            spec = spec_of(record)
            if spec is not None:
                found.append((record, spec))
        return found

    async def status(self) -> list[ScheduleStatus]:
        """Every scheduled config with its next and last run, read from Temporal."""
        client = await self.gateway.client()
        out: list[ScheduleStatus] = []
        for record, spec in await self.scheduled_configs():
            try:
                desc = await client.get_schedule_handle(schedule_id_for(record.id)).describe()
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    self.gateway.forget()
                    raise UnavailableError(
                        f"Temporal is not reachable: {exc.message}", error_code="TEMPORAL_UNAVAILABLE"
                    ) from exc
                out.append(ScheduleStatus(record, spec, None, None, False, False, "not yet in Temporal"))
                continue
            info = desc.info
            recent = info.recent_actions[-1] if info.recent_actions else None
            out.append(
                ScheduleStatus(
                    record,
                    spec,
                    next_run=info.next_action_times[0] if info.next_action_times else None,
                    last_run=(recent.started_at or recent.scheduled_at) if recent else None,
                    enabled=not desc.schedule.state.paused,
                    in_temporal=True,
                    note=desc.schedule.state.note,
                )
            )
        return out

    async def set_paused(self, record: PipelineConfigRecord, paused: bool) -> None:
        if spec_of(record) is None:
            raise FailedPreconditionError(f"pipeline {record.id} has no schedule", error_code="NO_SCHEDULE")
        client = await self.gateway.client()
        handle = client.get_schedule_handle(schedule_id_for(record.id))
        try:
            if paused:
                await handle.pause(note="paused through the API")
            else:
                await handle.unpause(note="unpaused through the API")
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise NotFoundError(
                    f"the schedule of pipeline {record.id} is not in Temporal yet",
                    error_code="SCHEDULE_NOT_FOUND",
                ) from exc
            self.gateway.forget()
            raise UnavailableError(
                f"Temporal is not reachable: {exc.message}", error_code="TEMPORAL_UNAVAILABLE"
            ) from exc
