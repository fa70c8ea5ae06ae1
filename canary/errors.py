"""The errors a person reads: one line that says what went wrong.

Every error the release raises on purpose derives from `CanaryError`; its message is the
one-line reason shown in the console, the run's final state, Slack and the report, and its
`exit_code` is what the command line exits with. Anything else (an API error, a broken
connection) is described by `describe`.
"""

from __future__ import annotations

import json
from typing import ClassVar

from canary.exit_codes import BAD_INPUT, ERROR


class CanaryError(Exception):
    """An error whose message is the reason, in one line, for a person."""

    exit_code: ClassVar[int] = ERROR

    @property
    def reason(self) -> str:
        return (str(self).strip().splitlines() or [""])[0]


class BadInput(CanaryError):
    """Refused before anything changed: a bad plan, flag or kubeconfig, a held service."""

    exit_code = BAD_INPUT


def reason_of(exc: BaseException) -> str:
    """One line that says what went wrong, whatever was raised."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, CanaryError) and exc.reason:
        return exc.reason
    return describe(exc)


def describe(exc: BaseException) -> str:
    """A one-line description of any error, API and connection errors in their own words."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import (
        ConnectTimeoutError,
        MaxRetryError,
        NewConnectionError,
        ReadTimeoutError,
    )

    if isinstance(exc, ApiException):
        message = _api_message(exc)
        return f"HTTP {exc.status} {exc.reason}" + (f": {message}" if message else "")
    if isinstance(exc, MaxRetryError | NewConnectionError | ReadTimeoutError | ConnectTimeoutError):
        return _unreachable(exc)
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _unreachable(exc: Exception) -> str:
    """'cannot reach the API server at HOST:PORT: connection refused', not urllib3's repr."""
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError

    pool = getattr(exc, "pool", None) or getattr(exc, "conn", None)
    host, port = getattr(pool, "host", None), getattr(pool, "port", None)
    where = f" at {host}:{port}" if host else ""
    reason = getattr(exc, "reason", None) or exc
    if isinstance(reason, ReadTimeoutError):
        return f"the API server{where} did not answer in time ({_timeout_of(reason)})"
    # A refused connection is a NewConnectionError, which urllib3 derives from the timeout.
    if isinstance(reason, ConnectTimeoutError) and not isinstance(reason, NewConnectionError):
        return f"cannot reach the API server{where}: connecting timed out"
    cause = str(reason)
    detail = cause.rsplit("] ", 1)[-1] if "] " in cause else cause.rsplit(": ", 1)[-1]
    return f"cannot reach the API server{where}: {detail.strip().rstrip(')').lower()}"


def _timeout_of(reason: Exception) -> str:
    """'read timeout 15s' from urllib3's '... (read timeout=15.0)'."""
    text = str(reason)
    if "timeout=" not in text:
        return "timed out"
    seconds = text.rsplit("timeout=", 1)[1].rstrip(")").strip()
    return f"read timeout {seconds.removesuffix('.0')}s"


def _api_message(exc: Exception) -> str:
    try:
        return str(json.loads(getattr(exc, "body", None) or "{}").get("message", ""))
    except (ValueError, AttributeError):
        return ""
