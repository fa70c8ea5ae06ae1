"""The approval listener in its own process, and abusive requests for it.

`running_listener` starts `canary approvals serve` as a user would (and as the listener
Deployment runs it). Each abuse case sends
one request as an attacker (or a broken client) would, and returns what came back: the
status the listener answered, or None when it closed the connection without an answer.
Bodies of hundreds of MiB are sent as the same chunk over and over, while another thread
reads the answer: sending stops as soon as the listener answers or stops reading. Shared
by the tests in tests/approvals and bench/listener_abuse.py.
"""

from __future__ import annotations

import contextlib
import json
import queue
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.processes import start_process, stop_process
from tests.support.slack_stub import block_actions, sign

REPO = Path(__file__).resolve().parents[2]
CHUNK = b"x" * 65536
MIB = 1 << 20
STARTUP_TIMEOUT_S = 120.0  # it imports Prefect and Slack's SDK, on a busy machine
_URL = re.compile(re.escape("http://127.0.0.1:") + r"\d+/slack/events")


@contextlib.contextmanager
def running_listener(env: dict[str, str], log: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """`canary approvals serve` in its own process; yields its interactivity URL (Slack's
    request URL) and the process. `env` is its whole environment (the Slack token and
    signing secret, PREFECT_API_URL); its stderr (the log) goes to `log`."""
    env = env | {"PYTHONPATH": str(REPO)}
    env.pop("SLACK_APP_TOKEN", None)  # HTTP, not Socket Mode
    with log.open("w") as err:
        process = start_process(
            [sys.executable, "-m", "canary", "approvals", "serve", "--port", "0"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(process.stdout.readline()), daemon=True).start()
    try:
        try:
            line = lines.get(timeout=STARTUP_TIMEOUT_S)
        except queue.Empty:
            line = ""
        match = _URL.search(line)
        assert match, f"listener did not start: {line!r} {log.read_text()}"
        yield match[0], process
    finally:
        stop_process(process, timeout=10)


@contextlib.contextmanager
def approval_listener(env: dict[str, str], log: Path) -> Iterator[str]:
    """The listener of `running_listener`; yields only its URL."""
    with running_listener(env, log) as (url, _):
        yield url


@dataclass
class Answer:
    status: int | None  # None: the connection closed without an answer
    body: bytes = b""
    sent: int = 0  # body bytes the client got out before it stopped
    seconds: float = 0.0  # from connecting until the answer (or the close)


@dataclass
class Target:
    host: str
    port: int
    secret: str
    path: str = "/slack/events"

    @classmethod
    def of(cls, url: str, secret: str) -> Target:
        parts = urllib.parse.urlsplit(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 80, secret, parts.path)


@dataclass
class _Reply:
    data: bytearray = field(default_factory=bytearray)
    done: threading.Event = field(default_factory=threading.Event)


def exchange(
    target: Target,
    head: bytes,
    body: Iterable[bytes] = (),
    *,
    timeout: float = 60.0,
) -> Answer:
    """Send `head`, then `body` chunk by chunk until answered; then wait up to `timeout`
    for the answer or the close (a slow client sends no more and waits)."""
    started = time.monotonic()
    with socket.create_connection((target.host, target.port), timeout=timeout) as sock:
        reply = _Reply()
        reader = threading.Thread(target=_read, args=(sock, reply), daemon=True)
        reader.start()
        sent = 0
        try:
            sock.sendall(head)
            for chunk in body:
                if reply.done.is_set():
                    break
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:  # the listener closed the connection: it stopped reading
            pass
        reply.done.wait(timeout)
        seconds = time.monotonic() - started
    reader.join(timeout)
    status, payload = _parse(bytes(reply.data))
    return Answer(status, payload, sent, seconds)


def _read(sock: socket.socket, reply: _Reply) -> None:
    """Read one response (head and Content-Length body) or until the connection closes."""
    try:
        while not _complete(reply.data):
            data = sock.recv(65536)
            if not data:
                break
            reply.data += data
    except OSError:
        pass
    finally:
        reply.done.set()


def _complete(data: bytearray) -> bool:
    head, sep, rest = bytes(data).partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(rest) >= int(value.strip())
    return True


def _parse(data: bytes) -> tuple[int | None, bytes]:
    if not data.startswith(b"HTTP/1."):
        return None, data
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), rest


# --- requests -------------------------------------------------------------------------------


def request_head(target: Target, headers: dict[str, str | bytes]) -> bytes:
    lines = [f"POST {target.path} HTTP/1.1".encode(), f"Host: {target.host}".encode()]
    for name, value in headers.items():
        lines.append(
            name.encode() + b": " + (value if isinstance(value, bytes) else value.encode())
        )
    return b"\r\n".join(lines) + b"\r\n\r\n"


def form(payload: Any) -> str:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return urllib.parse.urlencode({"payload": text})


def post(
    target: Target,
    body: bytes,
    *,
    signed_at: int | None = None,
    signature: str | None = None,
    timestamp: str | None = None,
) -> Answer:
    """A complete form POST; signed with the target's secret at `signed_at` (default now)."""
    stamp = timestamp or str(int(time.time()) if signed_at is None else signed_at)
    headers: dict[str, str | bytes] = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Content-Length": str(len(body)),
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": signature or sign(target.secret, stamp, body.decode("latin-1")),
    }
    return exchange(target, request_head(target, headers) + body)


def click(**changes: Any) -> dict[str, Any]:
    """A well-formed click on a button whose value is no binding of ours."""
    message = {"ts": "1700000000.000100", "blocks": []}
    payload = block_actions("U0ABUSER", "canary_approve", "not-a-binding", "C0RELEASES", message)
    for name, value in changes.items():
        if value is None:
            payload.pop(name, None)
        else:
            payload[name] = value
    return payload


def repeated(total: int) -> Iterator[bytes]:
    for _ in range(total // len(CHUNK)):
        yield CHUNK


def chunked(total: int) -> Iterator[bytes]:
    frame = f"{len(CHUNK):x}\r\n".encode() + CHUNK + b"\r\n"
    for _ in range(total // len(CHUNK)):
        yield frame


# --- the cases ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    expect: int | None  # None: the connection is closed without an answer
    send: Callable[[Target], Answer]


def _streamed(head: dict[str, str], chunks: Iterator[bytes]) -> Callable[[Target], Answer]:
    return lambda t: exchange(t, request_head(t, head), chunks)


def cases(read_timeout: float, stream: int = 300 * MIB) -> list[Case]:
    """Every abuse and its expected answer; `read_timeout` is the listener's setting."""
    wait = 5 * read_timeout + 30  # generous: a busy machine must not fail a case
    form_head = {"Content-Type": "application/x-www-form-urlencoded"}
    return [
        Case("content-length -1", 400, _streamed({"Content-Length": "-1"}, iter(()))),
        Case("content-length not a number", 400, _streamed({"Content-Length": "ten"}, iter(()))),
        Case("no content-length", 411, _streamed({}, iter(()))),
        Case("declared 2 MiB", 413, _streamed({"Content-Length": str(2 * MIB)}, iter(()))),
        Case(
            f"declared {stream // MIB} MiB, streamed",
            413,
            lambda t: exchange(
                t, request_head(t, {"Content-Length": str(stream)}), repeated(stream)
            ),
        ),
        Case(
            f"chunked {stream // MIB} MiB",
            413,
            lambda t: exchange(
                t, request_head(t, {**form_head, "Transfer-Encoding": "chunked"}), chunked(stream)
            ),
        ),
        Case(
            f"content-length -1, then {stream // MIB} MiB",
            400,
            lambda t: exchange(t, request_head(t, {"Content-Length": "-1"}), repeated(stream)),
        ),
        Case(
            "slow body",
            408,
            lambda t: exchange(
                t,
                request_head(t, {**form_head, "Content-Length": "100"}) + b"payload=",
                timeout=wait,
            ),
        ),
        Case(
            "slow head",
            None,
            lambda t: exchange(t, f"POST {t.path} HTTP/1.1\r\nHost: x\r\n".encode(), timeout=wait),
        ),
        Case("payload not JSON", 400, lambda t: post(t, b"payload=%7Bnot+json")),
        Case("payload a JSON list", 400, lambda t: post(t, form([1, 2]).encode())),
        Case("no payload field", 400, lambda t: post(t, b"token=x&user=U0ABUSER")),
        Case("body not UTF-8", 400, lambda t: post(t, b"payload=\xff\xfe")),
        Case("signed, actions []", 400, lambda t: post(t, form(click(actions=[])).encode())),
        Case("signed, no user", 400, lambda t: post(t, form(click(user=None)).encode())),
        Case(
            "signed, no channel",
            400,
            lambda t: post(t, form(click(channel=None, container=None)).encode()),
        ),
        Case(
            "signed, not a click",
            400,
            lambda t: post(t, form(click(type="view_submission")).encode()),
        ),
        Case(
            "timestamp not a number", 401, lambda t: post(t, form(click()).encode(), timestamp="x")
        ),
        Case(
            "signed 6 minutes ago",
            401,
            lambda t: post(t, form(click()).encode(), signed_at=int(time.time()) - 360),
        ),
        Case("forged signature", 401, lambda t: post(t, form(click()).encode(), signature="v0=0")),
        Case("well-formed click, foreign button", 200, lambda t: post(t, form(click()).encode())),
    ]
