"""The approval listener's HTTP side: Bolt's ASGI adapter on uvicorn, behind limits.

The listener faces the internet (Slack's request URL), so whatever a client sends costs
it a bounded amount of memory, time and connections before the request is refused:

* a connection must deliver its request head within `read_timeout` of opening (or of the
  previous response), else it is closed: a held socket does not hold the listener;
* a request must declare its body (Content-Length or chunked), else 411; uvicorn's h11
  parser answers 400 to a length that is negative or not a number;
* a body larger than MAX_BODY is refused with 413, when declared without reading it, when
  streamed as soon as it passes the limit; reading pauses while the application is busy
  (uvicorn's flow control), so memory holds about one body per connection;
* the body must arrive within `read_timeout` of its head, else 408;
* at most `max_connections` connections at once; uvicorn answers 503 beyond;
* what Bolt cannot parse (a body that is not UTF-8 text, a `payload` that is not a JSON
  object, a timestamp that is not a number) is refused with 400 or 401 before Bolt sees it:
  Bolt would raise on it.

Bolt itself then checks Slack's signature and timestamp (its RequestVerification
middleware: 401 when the HMAC does not match or the timestamp is more than 5 minutes
off) and runs the listeners. Bolt is synchronous, so each request is dispatched in a
worker thread while the event loop goes on reading other connections.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import h11
import uvicorn
from slack_bolt import App, BoltRequest, BoltResponse
from slack_bolt.adapter.asgi import SlackRequestHandler
from slack_bolt.adapter.asgi.http_request import AsgiHttpRequest
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("canary.approvals.listener")

EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/health"
MAX_BODY = 1 << 20  # Slack's interactivity payloads are a few KiB
READ_TIMEOUT = 10.0
MAX_CONNECTIONS = 64

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Refused(Exception):
    """A request answered with `status` and `reason`, without reaching Bolt."""

    def __init__(self, status: int, reason: str):
        self.status = status
        self.reason = reason
        super().__init__(f"{status} {reason}")


class _Disconnected(Exception):
    """The client went away while its body was read."""


# --- the ASGI application -------------------------------------------------------------------


class GuardedListener:
    """ASGI application: the limits above, then Bolt's adapter for POST EVENTS_PATH."""

    def __init__(
        self, app: App, read_timeout: float = READ_TIMEOUT, max_body: int = MAX_BODY
    ) -> None:
        self.bolt = _BoltInThreads(app, EVENTS_PATH)
        self.read_timeout = read_timeout
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan
            await self.bolt(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        if method in ("GET", "HEAD") and path == HEALTH_PATH:
            await answer(send, 200, "ok")
            return
        if method != "POST" or path != EVENTS_PATH:
            await answer(send, 404, "not found")
            return
        try:
            body = await self._read(scope, receive)
        except Refused as refused:
            log.info("refused a request from %s: %s", _client(scope), refused)
            await answer(send, refused.status, refused.reason, close=True)
            return
        except _Disconnected:
            return
        await self.bolt(scope, _replay(body), send)

    async def _read(self, scope: Scope, receive: Receive) -> bytes:
        """The body, once it passed every check that needs no signature."""
        headers = _headers(scope)
        declared = headers.get("content-length")
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if declared is None and not chunked:
            raise Refused(411, "Content-Length required")
        if declared is not None and int(declared) > self.max_body:  # h11 checked the digits
            raise Refused(413, f"body larger than {self.max_body} bytes")
        body = await self._receive_body(receive)
        _check_timestamp(headers)
        _check_form(body)
        return body

    async def _receive_body(self, receive: Receive) -> bytes:
        body = bytearray()
        try:
            async with asyncio.timeout(self.read_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise _Disconnected
                    body += message.get("body", b"")
                    if len(body) > self.max_body:
                        raise Refused(413, f"body larger than {self.max_body} bytes")
                    if not message.get("more_body", False):
                        return bytes(body)
        except TimeoutError:
            raise Refused(408, f"body not received within {self.read_timeout:g}s") from None


class _BoltInThreads(SlackRequestHandler):
    """Bolt's ASGI adapter, dispatching in a worker thread: Bolt's signature check, its
    middleware and its wait for the listener's ack are blocking calls."""

    async def dispatch(self, request: AsgiHttpRequest) -> BoltResponse:
        body = await request.get_raw_body()
        bolt_request = BoltRequest(
            body=body, query=request.query_string, headers=request.get_headers()
        )
        response = await asyncio.to_thread(self.app.dispatch, bolt_request)
        if response.status == 401:
            log.info("refused a request: invalid signature or stale timestamp")
        return response


async def answer(send: Send, status: int, text: str, *, close: bool = False) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8")]
    if close:  # the rest of the request is not read: the connection cannot be reused
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": text.encode()})


def _replay(body: bytes) -> Receive:
    """A receive() that gives the body already read, then a disconnect."""
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> Message:
        return messages.pop() if messages else {"type": "http.disconnect"}

    return receive


def _headers(scope: Scope) -> dict[str, str]:
    """Header names and values as text; Bolt's adapter reads them as UTF-8."""
    try:
        return {name.decode("ascii"): value.decode("utf-8") for name, value in scope["headers"]}
    except UnicodeDecodeError:
        raise Refused(400, "header not UTF-8") from None


def _check_timestamp(headers: dict[str, str]) -> None:
    # Bolt's verifier takes int() of it: anything else would end in a 500 and a traceback.
    timestamp = headers.get("x-slack-request-timestamp")
    if timestamp is not None and not (timestamp.isascii() and timestamp.isdigit()):
        raise Refused(401, "invalid signature or stale timestamp")


def _check_form(body: bytes) -> None:
    """A form with one field, payload, holding a JSON object: what Slack sends for a click."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(400, "body not UTF-8") from None
    fields = parse_qsl(text, keep_blank_values=True, max_num_fields=8)
    payloads = [value for name, value in fields if name == "payload"]
    if len(payloads) != 1:
        raise Refused(400, "expected a form with one payload field")
    try:
        payload = json.loads(payloads[0])
    except (ValueError, RecursionError):
        raise Refused(400, "payload is not JSON") from None
    if not isinstance(payload, dict):
        raise Refused(400, "payload is not a JSON object")


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "unknown"


# --- the HTTP protocol ----------------------------------------------------------------------


class HeadDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request head is too slow.

    uvicorn times out idle keep-alive connections only after a response, and a byte of
    data resets that; a client may otherwise open a connection and send nothing, or a
    header a minute, for ever.
    """

    head_timeout = READ_TIMEOUT

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm()

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # the head is in (or the connection broke)
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm()  # the next request on this connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.head_timeout, self._expired)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _expired(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            log.info("closed a connection: no request within %gs", self.head_timeout)
            self.transport.close()


def protocol_with_deadline(seconds: float) -> type[HeadDeadlineProtocol]:
    return type("HeadDeadlineProtocol", (HeadDeadlineProtocol,), {"head_timeout": seconds})


# --- the server -----------------------------------------------------------------------------


def uvicorn_server(
    app: App, *, read_timeout: float = READ_TIMEOUT, max_connections: int = MAX_CONNECTIONS
) -> uvicorn.Server:
    config = uvicorn.Config(
        GuardedListener(app, read_timeout),
        http=protocol_with_deadline(read_timeout),
        lifespan="off",
        limit_concurrency=max_connections,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=5,
        h11_max_incomplete_event_size=16 * 1024,  # request line and headers
        access_log=False,
        log_config=None,  # the listener's logging.basicConfig
        server_header=False,
    )
    return uvicorn.Server(config)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the server starts: its port is known (port 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=128)
