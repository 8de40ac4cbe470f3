"""Roles and principals: viewer < operator < editor < admin."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal


class Role(StrEnum):
    viewer = "viewer"  # reads everything: GET, SSE, WebSocket
    operator = "operator"  # also runs, cancels and replays
    editor = "editor"  # also creates, updates, deletes and validates configs
    admin = "admin"  # also manages tokens and destructive system actions

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


@dataclass(frozen=True)
class Principal:
    """An authenticated caller; `name` is what executions and config versions record."""

    name: str
    role: Role
    kind: Literal["token", "oidc", "local"]


LOCAL = Principal(name="local", role=Role.admin, kind="local")  # SLUICE_AUTH=none on loopback
