"""The one error `up` and `build` report: which component failed, why, and where its log is."""

from __future__ import annotations

from pathlib import Path


class ComponentError(Exception):
    """A component of the cluster (or of its build) failed."""

    def __init__(self, component: str, cause: str, log: Path | None = None) -> None:
        super().__init__(component, cause, log)
        self.component = component
        self.cause = cause
        self.log = log

    def line(self) -> str:
        """One line for the user: component, cause, and the log to read."""
        where = f" (log: {self.log})" if self.log else ""
        cause = " ".join(self.cause.split())  # a cause from a log line stays on one line
        return f"{self.component}: {cause}{where}"
