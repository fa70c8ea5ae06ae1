"""Release state that must outlive a process, in Prefect Variables.

A release resumed by another process (its worker crashed) finds here what the first one
decided or posted: gate requests and decisions (`canary.approvals.store`), the Slack
thread (`canary.slack.thread`), an abort request (`canary.stopping`); and what operators
act on: a run's control record (`canary.control.state`). Prefect is imported
lazily: importing this is free.

They outlive the release too (a late Slack click must still read "already decided", a
resumed release find its decisions): as each release ends, `prune_quietly` drops those
not updated for `$CANARY_STATE_RETENTION_DAYS` days (default 14).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any

log = logging.getLogger(__name__)

# Every name is `<prefix>-<id>...` (var_name): these say which Variables are the project's.
GATE_PREFIX = "canary-gate"  # canary-gate-<run id>-<gate>
DECISION_PREFIX = "canary-decision"  # canary-decision-<release id>-<gate>
ABORT_PREFIX = "canary-abort"  # canary-abort-<run id>
SLACK_THREAD_PREFIX = "canary-slack-thread"  # canary-slack-thread-<release id>
CONTROL_PREFIX = "canary-control"  # canary-control-<run id>
PREFIXES = (GATE_PREFIX, DECISION_PREFIX, ABORT_PREFIX, SLACK_THREAD_PREFIX, CONTROL_PREFIX)

RETENTION_ENV = "CANARY_STATE_RETENTION_DAYS"
DEFAULT_RETENTION = timedelta(days=14)
# The first release after months without pruning must not spend minutes deleting: the
# rest goes with the next releases.
PRUNE_BATCH = 100


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


# --- pruning ------------------------------------------------------------------------------


def retention() -> timedelta:
    """`$CANARY_STATE_RETENTION_DAYS` (days, > 0), else the default: a typo fails no release."""
    raw = os.environ.get(RETENTION_ENV, "").strip()
    if not raw:
        return DEFAULT_RETENTION
    try:
        days = float(raw)
        if not days > 0:  # also refuses nan: 0 would drop the state of releases still running
            raise ValueError(raw)
        return timedelta(days=days)
    except (ValueError, OverflowError):
        default = DEFAULT_RETENTION.days
        log.warning("%s=%r is not a positive number of days; using %d", RETENTION_ENV, raw, default)
        return DEFAULT_RETENTION


def prune(
    older_than: timedelta,
    prefixes: Collection[str] = PREFIXES,
    *,
    now: datetime | None = None,
    at_most: int | None = None,
) -> int:
    """Delete the Variables under `prefixes` not updated for `older_than`; returns how many."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    cutoff = (now or datetime.now(UTC)) - older_than
    deleted = 0
    with get_client(sync_client=True) as client:
        # Listed in full before deleting: deleting while paging by offset would skip some.
        for name in _stale_names(client, tuple(f"{p}-" for p in prefixes), cutoff)[:at_most]:
            try:
                client.delete_variable_by_name(name)
            except ObjectNotFound:  # another release pruned it first
                continue
            deleted += 1
    return deleted


def _stale_names(client: Any, starts: tuple[str, ...], cutoff: datetime) -> list[str]:
    """Names starting with one of `starts`, last updated before `cutoff`, a page at a time."""
    from prefect.client.schemas.filters import VariableFilter, VariableFilterName
    from prefect.client.schemas.objects import Variable

    # The server matches `like_` anywhere in the name, so it only shortens the list;
    # startswith decides. (commonprefix: characters are meant, these are not paths.)
    like = VariableFilterName(like_=os.path.commonprefix(starts) or None)  # noqa: RUF071
    query = VariableFilter(name=like).model_dump(mode="json", exclude_none=True)
    names: list[str] = []
    offset = 0
    while True:
        # The client's read_variables takes neither filter nor offset: the endpoint it calls.
        # No limit sent: pages are as long as the server allows, so read until one is empty.
        body = {"variables": query, "sort": "NAME_ASC", "offset": offset}
        page = Variable.model_validate_list(
            client.request("POST", "/variables/filter", json=body).json()
        )
        if not page:
            return names
        offset += len(page)
        names += [v.name for v in page if _stale(v, starts, cutoff)]


def _stale(variable: Any, starts: tuple[str, ...], cutoff: datetime) -> bool:
    updated = variable.updated
    return variable.name.startswith(starts) and updated is not None and updated < cutoff


def prune_quietly() -> None:
    """Prune with the configured retention; any failure is logged, never raised.

    Housekeeping at the end of a release: it must not change how the release ends.
    """
    keep = retention()
    try:
        deleted = prune(keep, at_most=PRUNE_BATCH)
    except Exception as exc:
        log.warning("pruning old release state failed (kept for the next release): %r", exc)
        return
    if deleted:
        log.info("pruned %d release state Variable(s) older than %s", deleted, keep)
