"""Skip logic for tests that need a real Prometheus; the server is `sandbox.prometheus`."""

from __future__ import annotations

import os

import pytest

from sandbox.prometheus import find_prometheus_binary


def require_prometheus() -> str:
    """The binary's path; skips the calling test without it (fails it under CI, ``CI`` set)."""
    binary = find_prometheus_binary()
    if binary is None:
        reason = (
            "Prometheus binary not found (install Debian's 'prometheus' package "
            "or set PROMETHEUS_BIN)"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return binary
