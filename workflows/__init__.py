"""Deterministic workflow code only. Export WORKFLOWS for the worker factory."""

from sluice.workflows.backfill import BackfillWorkflow
from sluice.workflows.execution import ExecutionWorkflow
from sluice.workflows.handler_check import HandlerCheckWorkflow
from sluice.workflows.scheduled_run import ScheduledRunWorkflow

WORKFLOWS = [ExecutionWorkflow, HandlerCheckWorkflow, BackfillWorkflow, ScheduledRunWorkflow]

__all__ = [
    "WORKFLOWS",
    "BackfillWorkflow",
    "ExecutionWorkflow",
    "HandlerCheckWorkflow",
    "ScheduledRunWorkflow",
]
