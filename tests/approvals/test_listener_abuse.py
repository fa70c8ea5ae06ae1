"""The approval listener, exposed to the internet: every abuse gets its answer, and costs it
bounded memory, time and connections.

The listener runs as `canary approvals serve` does, with a read timeout of 1 s instead of
10 s. How long each answer takes is measured by bench/listener_abuse.py, not here.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from subprocess import Popen

import pytest

from tests.approvals.conftest import SIGNING_SECRET
from tests.support.listener import MIB, Target, cases, running_listener
from tests.support.slack_stub import BOT_TOKEN, SlackStub
from tests.support.waiting import wait_until

READ_TIMEOUT = 1.0
CASES = cases(READ_TIMEOUT)
STREAMS = [c for c in CASES if "300 MiB" in c.name]
# The body cap is 1 MiB; one body is held as bytes, as text and parsed, and uvicorn keeps
# up to 64 KiB of unread input per connection. 32 MiB leaves room for the allocator;
# reading 300 MiB without limit (as http.server did) would grow it by ~300 MiB.
RSS_GROWTH_BOUND = 32 * MIB


def listener_env(slack: SlackStub, home: Path, **limits: str) -> dict[str, str]:
    return os.environ | {
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.url,
        "PREFECT_API_URL": "http://127.0.0.1:9/api",  # never reached: no click is decided
        "PREFECT_HOME": str(home),
        **limits,
    }


@pytest.fixture(scope="module")
def abused(
    slack: SlackStub, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Target, Popen, Path]]:
    home = tmp_path_factory.mktemp("abused-home")
    log = tmp_path_factory.mktemp("abused") / "listener.log"
    env = listener_env(slack, home, CANARY_LISTENER_READ_TIMEOUT=str(READ_TIMEOUT))
    with running_listener(env, log) as (url, process):
        yield Target.of(url, SIGNING_SECRET), process, log


def health(target: Target) -> int:
    url = f"http://{target.host}:{target.port}/health"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def memory_kib(process: Popen, field: str) -> int:
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {process.pid}")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_each_abuse_gets_its_answer_and_no_traceback(case, abused):
    target, process, log = abused
    answer = case.send(target)
    assert answer.status == case.expect, (answer.status, answer.body[:200])
    assert process.poll() is None
    assert "Traceback" not in log.read_text()
    assert health(target) == 200


def test_held_sockets_do_not_hold_the_listener_and_are_closed(abused):
    target, _, _ = abused
    held = [socket.create_connection((target.host, target.port), timeout=60) for _ in range(10)]
    try:
        for sock in held:
            sock.sendall(b"POST /slack/events HTTP/1.1\r\nHost: x\r\n")  # and nothing more
        assert health(target) == 200
        for sock in held:
            assert sock.recv(1024) == b""  # closed by the listener (its head deadline)
    finally:
        for sock in held:
            sock.close()


def test_memory_stays_bounded_while_300_mib_are_streamed(abused):
    target, process, _ = abused
    Path(f"/proc/{process.pid}/clear_refs").write_text("5")  # peak RSS := RSS now
    before = memory_kib(process, "VmRSS") * 1024
    for case in STREAMS:
        answer = case.send(target)
        assert answer.status == case.expect, case.name
        assert answer.sent < 300 * MIB, f"{case.name}: the listener read it all"
    peak = memory_kib(process, "VmHWM") * 1024
    assert peak - before < RSS_GROWTH_BOUND, (before // MIB, peak // MIB)


def test_a_well_formed_click_still_reaches_the_handler(abused, stub: SlackStub):
    target, _, _ = abused
    well_formed = next(c for c in CASES if c.expect == 200)
    assert well_formed.send(target).status == 200

    def told() -> list[str]:
        return [c.params["text"] for c in stub.calls_to("chat.postEphemeral")]

    assert "Not accepted" in wait_until(told, 30, message="the ephemeral refusal")[0]


def test_connections_beyond_the_limit_get_503_until_some_close(
    slack: SlackStub, tmp_path_factory: pytest.TempPathFactory
):
    home = tmp_path_factory.mktemp("limited-home")
    log = tmp_path_factory.mktemp("limited") / "listener.log"
    limits = {"CANARY_LISTENER_MAX_CONNECTIONS": "4", "CANARY_LISTENER_READ_TIMEOUT": "60"}
    with running_listener(listener_env(slack, home, **limits), log) as (url, _):
        target = Target.of(url, SIGNING_SECRET)
        assert health(target) == 200
        held = [socket.create_connection((target.host, target.port), timeout=60) for _ in range(4)]
        try:
            for sock in held:
                sock.sendall(b"POST /slack/events HTTP/1.1\r\n")
            wait_until(lambda: health(target) == 503, 30, message="503 beyond 4 connections")
        finally:
            for sock in held:
                sock.close()
        wait_until(lambda: health(target) == 200, 30, message="200 once they closed")
        assert "Traceback" not in log.read_text()


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("CANARY_LISTENER_READ_TIMEOUT", "ten"),
        ("CANARY_LISTENER_READ_TIMEOUT", "nan"),
        ("CANARY_LISTENER_MAX_CONNECTIONS", "0"),
        ("CANARY_LISTENER_MAX_CONNECTIONS", "99999"),
    ],
)
def test_a_bad_limit_is_one_line_and_exit_2(setting: str, value: str):
    env = {**os.environ, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET}
    result = subprocess.run(
        [sys.executable, "-m", "canary", "approvals", "serve", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, setting: value},
    )
    assert result.returncode == 2
    message = f"{setting} must be a number above 0 and at most 3600, not {value!r}"
    assert result.stderr.strip() == f"canary approvals serve: {message}"
