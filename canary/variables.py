"""Release state that must outlive a process, in Prefect Variables.

A release resumed by another process (its worker crashed) finds here what the first one
decided or posted: gate requests and decisions (`canary.approvals.gates`), the Slack
thread (`canary.notify.slack`). Prefect is imported lazily: importing this is free.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any


def var_name(prefix: str, *parts: str) -> str:
    """A valid Variable name (lower-case, digits, '-', '_'); odd ids get a hash suffix."""
    raw = "-".join(parts)
    clean = re.sub(r"[^a-z0-9_-]", "-", raw.lower())
    if clean != raw or len(clean) > 180:
        clean = f"{clean[:160]}-{hashlib.sha256(raw.encode()).hexdigest()[:12]}"
    return f"{prefix}-{clean}"


def load(name: str) -> Any:
    """The Variable's value, None if there is none."""
    from prefect.variables import Variable

    return Variable.get(name, default=None, _sync=True)


def store(name: str, value: dict[str, Any]) -> None:
    from prefect.variables import Variable

    Variable.set(name, value, overwrite=True, _sync=True)
