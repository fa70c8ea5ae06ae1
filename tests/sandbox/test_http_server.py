"""The sandbox's HTTP servers: a client that goes away is normal, and a stop is clean.

A client hangs up with a TCP reset (SO_LINGER 0), as a scraper at its timeout or a killed
process does, while the server is still answering. No traceback may reach stderr, and
the sandbox may log nothing above debug; the server goes on serving.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import urllib.request
from dataclasses import replace
from urllib.parse import urlsplit

import pytest

from sandbox.emulated import Sandbox
from sandbox.http_server import HttpServer, RequestHandler
from tests.support.waiting import wait_until

# Larger than what the kernel buffers on loopback (tcp_wmem's 4 MiB maximum plus the
# client's receive buffer), so that the server is still writing when the client hangs up.
BIG_ANSWER_BYTES = 16 * 1024 * 1024
CALLERS = 500  # distinct callers: each adds two series of some 23 lines of ~800 bytes
TRACEBACK = "Traceback (most recent call last)"
HANDLER_ERROR = "Exception occurred during processing of request"


def connect(url: str, receive_buffer: int | None = None) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:  # before connecting, so the window starts small
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(10)
    sock.connect((parts.hostname, parts.port))
    return sock


def send_get(sock: socket.socket, path: str) -> None:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: reviews\r\n\r\n".encode())


def hang_up(sock: socket.socket) -> None:
    """Close with a reset, not a FIN: the server's next write fails at once."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class Output:
    """What the sandbox wrote to stderr and logged above debug while a test ran.

    stderr is captured at the descriptor (capfd), so a server thread's traceback is seen
    however it is written. Other tests of the same worker may leave threads that log or
    print (Prefect's clients, say); only what comes from the sandbox counts.
    """

    def __init__(self, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture):
        self.capfd, self.caplog, self.stderr = capfd, caplog, ""
        caplog.set_level(logging.DEBUG)

    def read(self) -> str:
        self.stderr += self.capfd.readouterr().err
        return self.stderr

    def tracebacks(self) -> list[str]:
        """Tracebacks on stderr, and socketserver's banner for an error in a handler."""
        text = self.read()
        return [mark for mark in (TRACEBACK, HANDLER_ERROR) if mark in text]

    def sandbox_records(self) -> list[logging.LogRecord]:
        return [r for r in self.caplog.records if r.name.split(".")[0] == "sandbox"]

    def noisy_records(self) -> list[logging.LogRecord]:
        return [r for r in self.sandbox_records() if r.levelno > logging.DEBUG]

    def client_gone_noted(self) -> bool:
        """The server noticed the hang-up: a debug line, or (wrongly) anything louder."""
        noted = any("went away" in r.getMessage() for r in self.sandbox_records())
        return noted or bool(self.tracebacks()) or bool(self.noisy_records())


@pytest.fixture
def output(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> Output:
    return Output(capfd, caplog)


def test_a_scrape_that_hangs_up_mid_answer_leaves_no_traceback(output: Output) -> None:
    with Sandbox("healthy", seed=5, rps=0) as box:
        assert box.simulator is not None and box.wait_ready(10)
        served = box.simulator.router.route("reviews")  # reviews-v1: two reporters
        for i in range(CALLERS):  # a big exposition: many callers of reviews
            caller = replace(box.simulator.source, workload=f"caller-{i}")
            box.simulator.metrics.record(caller, served, 200, 5.0)
        assert len(box.simulator.metrics_text()) > BIG_ANSWER_BYTES

        scraper = connect(box.metrics_url, receive_buffer=4096)
        send_get(scraper, "/metrics")
        assert scraper.recv(1024).startswith(b"HTTP/1.1 200")  # the answer is under way
        hang_up(scraper)

        wait_until(output.client_gone_noted, timeout=30, message="the server to notice")
        with urllib.request.urlopen(
            box.metrics_url.replace("/metrics", "/healthz"), timeout=10
        ) as answer:
            assert answer.status == 200  # still serving
    assert output.tracebacks() == [], output.read()
    assert output.noisy_records() == []


@pytest.mark.parametrize("server", ["api", "ingress"])
def test_a_client_that_hangs_up_before_the_answer_leaves_no_traceback(
    server: str, output: Output
) -> None:
    # The API server answers 300 ms late (chaos), the ingress after the sampled latency
    # (a median of 20 ms): either way the reset is in before the answer is written.
    with Sandbox("healthy", seed=5, rps=0, chaos="api-slow=1,slow=300ms") as box:
        assert box.wait_ready(10)  # the ingress answers 503 at once until reviews is ready
        url, path = (
            (box.api_url, "/api/v1/namespaces/default/services")
            if server == "api"
            else (box.ingress_url, "/reviews/0")
        )
        client = connect(url)
        send_get(client, path)
        hang_up(client)

        wait_until(output.client_gone_noted, timeout=30, message="the server to notice")
        request = urllib.request.Request(f"{url}{path}", headers={"Host": "reviews"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200  # still serving
    assert output.tracebacks() == [], output.read()
    assert output.noisy_records() == []


class _Echo(RequestHandler):
    def do_GET(self) -> None:
        self.send_body(200, self.path.encode(), "text/plain")


def test_stop_ends_idle_keep_alive_connections_joins_threads_and_frees_the_port() -> None:
    server = HttpServer(_Echo, name="echo").start()
    host, port = server.address
    idle = connect(server.url)
    send_get(idle, "/one")
    assert idle.recv(4096).startswith(b"HTTP/1.1 200")  # kept alive, now idle
    threads = [t for t in threading.enumerate() if t.name == "echo-connection"]
    assert len(threads) == 1

    server.stop()

    assert not any(t.is_alive() for t in threads)
    assert idle.recv(4096) == b""  # the server ended the connection
    idle.close()
    with socket.socket() as again:  # the port is free at once
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind((host, port))
    server.stop()  # a second stop is harmless


def test_a_failing_handler_is_one_error_line(caplog: pytest.LogCaptureFixture) -> None:
    class Failing(RequestHandler):
        def do_GET(self) -> None:
            raise ValueError("a bug in a handler")

    caplog.set_level(logging.INFO)  # as a user runs it: the traceback is for debugging only

    def server_records() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "sandbox.http_server"]

    with HttpServer(Failing, name="failing") as server:
        client = connect(server.url)
        send_get(client, "/")
        assert client.recv(4096) == b""  # the connection ends without an answer
        client.close()
        wait_until(lambda: server_records(), timeout=10, message="the error to be logged")
    (record,) = server_records()
    assert record.levelno == logging.ERROR and "a bug in a handler" in record.getMessage()
    assert not record.exc_info
