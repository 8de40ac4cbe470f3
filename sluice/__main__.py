"""`python -m sluice ...` is the `sluice` command."""

from sluice.runtime.cli import main

if __name__ == "__main__":
    main()
