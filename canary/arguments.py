"""Argument parsing shared by the `canary` commands: a bad flag is one line and exit 2."""

from __future__ import annotations

import argparse
import sys

from canary.exit_codes import BAD_INPUT


class CommandParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage dump) and exits 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(BAD_INPUT)
