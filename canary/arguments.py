"""Argument parsing shared by the `canary` commands: a bad flag is one line and exit 2."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points

from canary.exit_codes import BAD_INPUT

# Commands other packages add (entry point group `canary.commands`, `name = "module:main"`,
# main(argv) -> exit code): the flows add `run`, the sandbox `demo` and `sandbox`, so the
# library never imports the flows or the sandbox.
COMMANDS_GROUP = "canary.commands"


@functools.cache  # read once per process: main and the help both ask
def added_commands() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=COMMANDS_GROUP)}


def added_command(name: str) -> Callable[[list[str]], int]:
    """The main of a command another package adds (`run`: the flows' release command)."""
    return added_commands()[name].load()


class CommandParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage dump) and exits 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(BAD_INPUT)
