"""One Prefect server, one Slack stub and one approval listener process per session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.listener import approval_listener
from tests.support.slack_stub import BOT_TOKEN, SlackStub
from tests.support.waiting import wait_until

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


@pytest.fixture(scope="session")
def prefect_api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The session's Prefect server: the root conftest's if it has one, else our own."""
    try:
        shared = request.getfixturevalue("prefect_api_url")
    except pytest.FixtureLookupError:
        shared = None
    if shared is not None:
        yield shared
        return
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_HOME,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect-home")
    updates = {PREFECT_HOME: str(home), PREFECT_SERVER_ANALYTICS_ENABLED: False}
    with temporary_settings(updates=updates), prefect_test_harness(server_startup_timeout=60):
        yield str(PREFECT_API_URL.value())


@pytest.fixture(scope="session")
def slack() -> Iterator[SlackStub]:
    with SlackStub() as stub:
        yield stub


@pytest.fixture(scope="session")
def slack_env(slack: SlackStub, prefect_api: str) -> Iterator[dict[str, str]]:
    """The environment both the flows (this process) and the listener see."""
    env = {
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.url,
        "PREFECT_API_URL": prefect_api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    yield env
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def listener(slack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`canary approvals serve` in its own process; yields its interactivity URL."""
    env = {
        **os.environ,
        **slack_env,
        "PREFECT_HOME": str(tmp_path_factory.mktemp("listener-home")),
    }
    log = tmp_path_factory.mktemp("listener") / "listener.log"
    with approval_listener(env, log) as url:
        yield url


@pytest.fixture
def stub(slack: SlackStub) -> SlackStub:
    """The session's Slack stub with a clean record for this test."""
    slack.reset()
    slack.usergroups.clear()
    return slack


__all__ = ["SIGNING_SECRET", "wait_until"]
