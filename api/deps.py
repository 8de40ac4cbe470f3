"""Injected services (the full-stack-fastapi-template `deps` pattern)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from sluice.services.configs import ConfigService
from sluice.services.executions import ExecutionService
from sluice.services.gateway import TemporalGateway
from sluice.services.lineage import LineageService
from sluice.services.logs import EventHub, LogService
from sluice.services.replays import ReplayService
from sluice.settings import Settings
from sluice.storage import ObjectStorage


@dataclass
class Services:
    settings: Settings
    configs: ConfigService
    executions: ExecutionService
    gateway: TemporalGateway
    replays: ReplayService
    lineage: LineageService
    storage: ObjectStorage
    logs: LogService
    hub: EventHub


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]
