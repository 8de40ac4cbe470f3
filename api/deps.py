"""Injected services (the full-stack-fastapi-template `deps` pattern)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from sluice.services import ConfigService, ExecutionService, TemporalGateway
from sluice.settings import Settings


@dataclass
class Services:
    settings: Settings
    configs: ConfigService
    executions: ExecutionService
    gateway: TemporalGateway


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]
