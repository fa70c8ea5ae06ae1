"""``python -m sandbox``: the same as ``canary sandbox``."""

from sandbox.cli import main

main()
