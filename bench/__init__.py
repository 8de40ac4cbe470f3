"""Benchmarks for Sluice (run from the repository root, e.g. `python bench/bench_executions.py`)."""
