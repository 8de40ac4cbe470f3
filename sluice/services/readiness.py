"""Readiness: can this process reach its database and Temporal right now?"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

from sluice.services.gateway import TemporalGateway


async def check_readiness(
    sessions: async_sessionmaker[AsyncSession], gateway: TemporalGateway
) -> dict[str, str]:
    """`ok` or `error: <type>` per dependency (never the error text: it may carry secrets)."""
    checks: dict[str, str] = {}
    try:
        async with sessions() as session:
            await session.exec(text("SELECT 1"))  # type: ignore[call-overload]
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        client = await gateway.client()
        await client.workflow_service.get_system_info(GetSystemInfoRequest())
        checks["temporal"] = "ok"
    except Exception as exc:
        gateway.forget()
        checks["temporal"] = f"error: {type(exc).__name__}"
    return checks
