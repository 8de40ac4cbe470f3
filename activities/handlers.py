"""Check handler strings where they will run: importing a handler module runs its code, so only a
worker (which runs it anyway) does it, never the API."""

from __future__ import annotations

from temporalio import activity

from sluice.errors import HandlerImportError
from sluice.handlers.registry import resolve_handler
from sluice.workflow_io import CHECK_HANDLERS, HandlerCheck


@activity.defn(name=CHECK_HANDLERS)
async def check_handlers(handlers: list[str]) -> list[HandlerCheck]:
    queue = activity.info().task_queue
    checks = []
    for spec in handlers:
        try:
            resolve_handler(spec)
            checks.append(HandlerCheck(handler=spec, queue=queue))
        except HandlerImportError as exc:
            checks.append(
                HandlerCheck(
                    handler=spec, queue=queue, code=exc.code, message=exc.message, suggestion=exc.suggestion
                )
            )
    return checks
