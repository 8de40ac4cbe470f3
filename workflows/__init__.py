"""Deterministic workflow code only. Export WORKFLOWS for the worker factory."""

from sluice.workflows.execution import ExecutionWorkflow
from sluice.workflows.handler_check import HandlerCheckWorkflow

WORKFLOWS = [ExecutionWorkflow, HandlerCheckWorkflow]

__all__ = ["WORKFLOWS", "ExecutionWorkflow", "HandlerCheckWorkflow"]
