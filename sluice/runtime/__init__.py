"""The assembly layer: the only code that brings the API, the workflows and the activities together.

`cli` (the `sluice` command), `devstack` (the embedded stack behind `sluice dev` and `sluice run`)
and `worker` (the worker factory behind `sluice worker` and `python worker.py`). Everything below
it (`sluice.api`, `sluice.workflows`, `sluice.activities` and the shared core) stays importable on
its own; the import contract in pyproject.toml keeps it that way.
"""
