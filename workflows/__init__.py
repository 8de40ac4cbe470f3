"""Deterministic workflow code only. Export WORKFLOWS for the worker factory."""

from workflows.execution import ExecutionWorkflow

WORKFLOWS = [ExecutionWorkflow]

__all__ = ["WORKFLOWS", "ExecutionWorkflow"]
