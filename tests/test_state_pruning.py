"""Old release state in Prefect Variables is pruned; other Variables and recent state stay."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import VariableCreate

import canary.prefect_variables as variables
from canary.prefect_variables import (
    ABORT_PREFIX,
    DECISION_PREFIX,
    DEFAULT_RETENTION,
    GATE_PREFIX,
    PREFIXES,
    RETENTION_ENV,
    SLACK_THREAD_PREFIX,
    prune,
    prune_quietly,
    retention,
    var_name,
)

DAY = timedelta(days=1)


def create(names: Iterable[str]) -> list:
    """Create the Variables; their server-side records (with `updated`)."""
    with get_client(sync_client=True) as client:
        return [client.create_variable(VariableCreate(name=n, value={"n": n})) for n in names]


def all_names() -> set[str]:
    with get_client(sync_client=True) as client:
        return {v.name for v in client.read_variables()}


def project_names(tag: str) -> list[str]:
    """One name per project prefix, as gates.py and slack.py make them."""
    return [
        var_name(GATE_PREFIX, f"run-{tag}", "promote"),
        var_name(DECISION_PREFIX, f"rel-{tag}", "step-1"),
        var_name(ABORT_PREFIX, f"run-{tag}"),
        var_name(SLACK_THREAD_PREFIX, f"rel-{tag}"),
    ]


@pytest.mark.usefixtures("prefect_api_url")
def test_only_old_project_variables_are_deleted():
    tag = uuid.uuid4().hex[:8]
    before = all_names()  # other tests' Variables on this server: older than the cutoff too
    old = project_names(f"old-{tag}")
    # Not the project's: one unrelated, two that merely look like it.
    others = [f"my-team-setting-{tag}", f"my-team-canary-gate-{tag}", f"canary-gateway-{tag}"]
    cutoff = max(v.updated for v in create([*old, *others])) + timedelta(milliseconds=1)
    time.sleep(0.05)  # the server's clock: recent ones are written after the cutoff
    recent = project_names(f"new-{tag}")
    create(recent)

    # "now" 14 days after the cutoff: what was written before it is 14 days old.
    deleted = prune(timedelta(days=14), now=cutoff + timedelta(days=14))

    kept = {n for n in before if not n.startswith(tuple(f"{p}-" for p in PREFIXES))}
    assert all_names() == kept | set(others) | set(recent)
    assert deleted == len(old) + len(before - kept)


@pytest.mark.usefixtures("prefect_api_url")
def test_pages_through_more_variables_than_one_response_holds(monkeypatch):
    # The server answers at most PREFECT_SERVER_API_DEFAULT_LIMIT (200) a call: pages of 2
    # here, by adding a limit to each list call prune makes.
    sent = []
    request = SyncPrefectClient.request

    def two_a_page(self, method, path, *args, json=None, **kwargs):
        if path == "/variables/filter" and json and "offset" in json:
            json = {**json, "limit": 2}
            sent.append(json["offset"])
        return request(self, method, path, *args, json=json, **kwargs)

    monkeypatch.setattr(SyncPrefectClient, "request", two_a_page)
    names = project_names(uuid.uuid4().hex[:8])
    create(names)

    deleted = prune(timedelta(0), now=datetime.now(UTC) + DAY)

    assert deleted >= len(names)
    assert not set(names) & all_names()
    assert len(sent) > 2 and sent == sorted(sent)


@pytest.mark.usefixtures("prefect_api_url")
def test_at_most_bounds_one_call():
    names = project_names(uuid.uuid4().hex[:8])
    create(names)
    later = datetime.now(UTC) + DAY

    assert prune(timedelta(0), now=later, at_most=1) == 1
    assert len(set(names) - all_names()) == 1
    prune(timedelta(0), now=later)  # leaves no state for the other tests


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, DEFAULT_RETENTION), ("", DEFAULT_RETENTION), ("30", 30 * DAY), (" 0.5 ", DAY / 2)],
)
def test_retention_from_the_environment(monkeypatch, caplog, raw, expected):
    if raw is None:
        monkeypatch.delenv(RETENTION_ENV, raising=False)
    else:
        monkeypatch.setenv(RETENTION_ENV, raw)
    with caplog.at_level(logging.WARNING, "canary.prefect_variables"):
        assert retention() == expected
    assert not caplog.records


@pytest.mark.parametrize("raw", ["two weeks", "0", "-3", "nan", "inf", "1e12"])
def test_an_invalid_retention_falls_back_to_the_default_with_a_warning(monkeypatch, caplog, raw):
    monkeypatch.setenv(RETENTION_ENV, raw)
    with caplog.at_level(logging.WARNING, "canary.prefect_variables"):
        assert retention() == DEFAULT_RETENTION
    [record] = caplog.records
    assert RETENTION_ENV in record.getMessage()


def test_prune_quietly_uses_the_retention_and_never_raises(monkeypatch, caplog):
    calls = []

    def failing(older_than: timedelta, **kwargs: object) -> int:
        calls.append((older_than, kwargs))
        raise RuntimeError("Prefect unreachable")

    monkeypatch.setattr(variables, "prune", failing)
    monkeypatch.setenv(RETENTION_ENV, "3")
    with caplog.at_level(logging.WARNING, "canary.prefect_variables"):
        prune_quietly()

    assert calls == [(3 * DAY, {"at_most": variables.PRUNE_BATCH})]
    assert "Prefect unreachable" in caplog.text


@pytest.mark.usefixtures("prefect_api_url")
def test_a_failing_prune_changes_no_release_outcome(monkeypatch, start_sandbox, fast_plan):
    from flows.canary_release import canary_release

    calls = []

    def failing(*args: object, **kwargs: object) -> int:
        calls.append(args)
        raise RuntimeError("Prefect unreachable")

    monkeypatch.setattr(variables, "prune", failing)
    box, plan = start_sandbox("healthy"), fast_plan()

    result = canary_release(plan, target=box.target)

    assert result.outcome == "promoted"
    assert len(calls) == 1  # once per release, at its end
