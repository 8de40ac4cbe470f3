"""Deterministic workflow code only. Export WORKFLOWS for the worker factory."""

from sluice.workflows.execution import ExecutionWorkflow

WORKFLOWS = [ExecutionWorkflow]

__all__ = ["WORKFLOWS", "ExecutionWorkflow"]
