"""Temporal worker entry point: `python worker.py` (same as `sluice worker`).

Reads SLUICE_TEMPORAL_ADDRESS, SLUICE_DATABASE_URL and SLUICE_STORAGE_URL; start one per core or
machine to scale out.
"""

from sluice.runtime.worker import main

if __name__ == "__main__":
    main()
