"""The one threaded HTTP server every server of the sandbox runs on.

``HttpServer(handler, port=0, name=...)`` binds 127.0.0.1 (port 0: a free port chosen by
the kernel, so there is no race with other processes), serves in a thread of its own with
one thread per connection, and stops cleanly: ``stop()`` ends the serving loop, closes the
listening socket, ends every open connection (idle keep-alive ones included) and joins the
connection threads.

A client that goes away is normal for a server: Prometheus closes a scrape connection at
its timeout, a watch client hangs up, a test's HTTP client gives up. Such a connection
ends with at most a debug line in the log, never a traceback (``CLIENT_GONE``). Any other
error in a handler is logged as one error line; its traceback only at debug level.

Handlers derive from ``RequestHandler``: HTTP/1.1 keep-alive, each answer written in one
buffered write without Nagle's delay, no access log (each server keeps the records it
needs), and ``send_body`` for a complete answer.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
# What a connection raises when its client went away mid-request or mid-answer.
CLIENT_GONE: tuple[type[BaseException], ...] = (
    BrokenPipeError,
    ConnectionResetError,
    ConnectionAbortedError,
    TimeoutError,  # socket.timeout is TimeoutError
)
STOP_TIMEOUT_S = 5.0


class RequestHandler(BaseHTTPRequestHandler):
    """The base of the sandbox's handlers; ``self.server`` is the serving ``_Server``."""

    protocol_version = "HTTP/1.1"
    # One buffered write per answer, and no Nagle: small answers written in pieces would
    # otherwise wait out the client's delayed ACK (~40 ms each).
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True
    server: _Server

    def handle(self) -> None:
        try:
            super().handle()
        except CLIENT_GONE as exc:
            self.close_connection = True
            log.debug("%s: client %s went away: %r", self.server.name, self.client_address, exc)

    def finish(self) -> None:
        # Closing the writer flushes what is buffered, which fails when the client is
        # gone; the reader must be closed all the same, or its socket leaks.
        for stream in (self.wfile, self.rfile):
            try:
                stream.close()
            except OSError as exc:
                log.debug(
                    "%s: closing a connection to %s: %r", self.server.name, self.client_address, exc
                )

    def send_body(
        self, code: int, body: bytes, content_type: str, headers: Mapping[str, str] | None = None
    ) -> None:
        """A complete answer: status, headers, ``Content-Length`` and (unless HEAD) body."""
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no access log: scrapes and watches would flood the output


class _Server(ThreadingHTTPServer):
    """One daemon thread per connection, each tracked so that ``close`` can end it."""

    daemon_threads = True
    block_on_close = False  # ``close`` joins the threads itself, with a deadline
    request_queue_size = 64

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], name: str
    ) -> None:
        super().__init__(address, handler)
        self.name = name
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"{self.name}-connection",
            daemon=True,
        )
        with self._lock:
            self._connections[request] = thread
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._connections.pop(request, None)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, CLIENT_GONE):
            log.debug("%s: client %s went away: %r", self.name, client_address, exc)
            return
        log.error(
            "%s: a request from %s failed: %r",
            self.name,
            client_address,
            exc,
            exc_info=log.isEnabledFor(logging.DEBUG),
        )

    def close(self, timeout: float) -> None:
        """Close the listening socket, end every open connection, join their threads."""
        self.server_close()
        with self._lock:
            open_now = dict(self._connections)
        for conn in open_now:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)  # wakes a handler blocked on a read
        deadline = time.monotonic() + timeout
        for thread in open_now.values():
            thread.join(max(0.0, deadline - time.monotonic()))


class HttpServer:
    """A threaded HTTP server on 127.0.0.1, serving in a background thread."""

    def __init__(
        self,
        handler: type[BaseHTTPRequestHandler],
        *,
        host: str = LOOPBACK,
        port: int = 0,
        name: str = "sandbox-http",
        poll_interval: float = 0.2,
    ) -> None:
        self.name = name
        self._poll_interval = poll_interval
        self._httpd = _Server((host, port), handler, name)
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    def start(self) -> Self:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                args=(self._poll_interval,),
                name=self.name,
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop serving and release the port; safe to call twice, or before ``start``."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._httpd.shutdown()  # returns once serve_forever has returned
            self._thread.join(timeout)
        self._httpd.close(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
