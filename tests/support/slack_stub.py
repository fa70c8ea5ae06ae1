"""A local Slack Web API stub that speaks Slack's wire format, and a signed-click sender.

`SlackStub` answers chat.postMessage, chat.update, chat.postEphemeral, auth.test and
usergroups.users.list the way slack.com does (HTTP 200 with `{"ok": ...}`), records every
call, and on demand answers the next N calls with 429 + Retry-After or with 500.
`send_interaction` posts a block_actions payload signed as Slack signs it.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import itertools
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BOT_TOKEN = "xoxb-stub-token"
TEAM_ID = "T0STUB"
BOT_USER = "U0CANARYBOT"


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    status: int
    response: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


class SlackStub:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, token: str = BOT_TOKEN):
        self.token = token
        self.calls: list[Call] = []
        self.usergroups: dict[str, list[str]] = {}
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self._failures: list[tuple[int, int]] = []  # (status, retry_after) for the next calls
        self._lock = threading.Lock()
        self._ts = itertools.count(100)
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> SlackStub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> SlackStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/api/"

    # --- what tests use ------------------------------------------------------------------

    def fail_next(self, status: int, count: int = 1, retry_after: int = 1) -> None:
        """Answer the next `count` calls with `status` (429 carries Retry-After)."""
        with self._lock:
            self._failures.extend([(status, retry_after)] * count)

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self._failures.clear()

    def calls_to(self, method: str, ok: bool = True) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method and (c.status == 200) == ok]

    def replies(self, parent_ts: str) -> list[Call]:
        return [
            c for c in self.calls_to("chat.postMessage") if c.params.get("thread_ts") == parent_ts
        ]

    # --- the API -------------------------------------------------------------------------

    def _answer(self, method: str, params: dict[str, Any], token: str | None) -> tuple[int, dict]:
        with self._lock:
            if self._failures:
                status, retry_after = self._failures.pop(0)
                body = {"ok": False, "error": "ratelimited" if status == 429 else "fatal_error"}
                self.calls.append(Call(method, params, status, body))
                return status, {**body, "_retry_after": retry_after}
            if token != self.token:
                body = {"ok": False, "error": "not_authed" if not token else "invalid_auth"}
            else:
                handler = getattr(self, "_" + method.replace(".", "_"), None)
                body = handler(params) if handler else {"ok": False, "error": "unknown_method"}
            # A copy: later chat.update calls must not rewrite what was answered before.
            self.calls.append(Call(method, params, 200, copy.deepcopy(body)))
            return 200, body

    def _next_ts(self) -> str:
        return f"1700000000.{next(self._ts):06d}"

    def _channel_id(self, channel: str) -> str:
        if channel.startswith("#"):
            return "C" + hashlib.sha1(channel.encode()).hexdigest()[:10].upper()
        return channel

    def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "http://127.0.0.1/",  # a workspace URL; never fetched
            "team": "Stub",
            "user": "canary",
            "team_id": TEAM_ID,
            "user_id": BOT_USER,
            "bot_id": "B0CANARY",
            "is_enterprise_install": False,
        }

    def _chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("channel"):
            return {"ok": False, "error": "channel_not_found"}
        channel, ts = self._channel_id(params["channel"]), self._next_ts()
        message = {
            "type": "message",
            "user": BOT_USER,
            "bot_id": "B0CANARY",
            "text": params.get("text", ""),
            "ts": ts,
            "blocks": _blocks(params),
        }
        if params.get("thread_ts"):
            message["thread_ts"] = params["thread_ts"]
        self.messages[(channel, ts)] = message
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, ts = params.get("channel", ""), params.get("ts", "")
        message = self.messages.get((channel, ts))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        message.update(text=params.get("text", ""), blocks=_blocks(params))
        return {
            "ok": True,
            "channel": channel,
            "ts": ts,
            "text": message["text"],
            "message": message,
        }

    def _chat_postEphemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("user"):
            return {"ok": False, "error": "user_not_in_channel"}
        return {"ok": True, "message_ts": self._next_ts()}

    def _usergroups_users_list(self, params: dict[str, Any]) -> dict[str, Any]:
        group = params.get("usergroup", "")
        if group not in self.usergroups:
            return {"ok": False, "error": "no_such_subteam"}
        return {"ok": True, "users": list(self.usergroups[group])}

    # --- HTTP ----------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                self._serve()

            def _serve(self) -> None:
                parsed = urllib.parse.urlsplit(self.path)
                method = parsed.path.rsplit("/", 1)[-1]
                params = _params(parsed.query, self.headers, self._body())
                auth = self.headers.get("Authorization", "")
                token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
                token = token or params.pop("token", None)
                status, body = stub._answer(method, params, token)
                retry_after = body.pop("_retry_after", None)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                if status == 429:
                    self.send_header("Retry-After", str(retry_after))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def _params(query: str, headers: Any, body: bytes) -> dict[str, Any]:
    params: dict[str, Any] = dict(urllib.parse.parse_qsl(query))
    kind = headers.get("Content-Type", "")
    if body and kind.startswith("application/json"):
        params.update(json.loads(body))
    elif body:
        params.update(urllib.parse.parse_qsl(body.decode()))
    return params


def _blocks(params: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = params.get("blocks") or []
    return json.loads(blocks) if isinstance(blocks, str) else blocks


# --- Slack → the listener ----------------------------------------------------------------


def sign(secret: str, timestamp: str, body: str) -> str:
    """Slack's request signature: v0= + HMAC-SHA256(secret, "v0:{ts}:{body}")."""
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def block_actions(
    user: str, action_id: str, value: str, channel: str, message: dict[str, Any]
) -> dict[str, Any]:
    """A block_actions payload as Slack sends it for a button click on a message."""
    now = f"{time.time():.6f}"
    return {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": TEAM_ID},
        "api_app_id": "A0CANARY",
        "token": "verification-token-unused",
        "container": {
            "type": "message",
            "message_ts": message["ts"],
            "channel_id": channel,
            "is_ephemeral": False,
        },
        "trigger_id": "1.2.3",
        "team": {"id": TEAM_ID, "domain": "stub"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel, "name": "releases"},
        "message": message,
        "state": {"values": {}},
        "response_url": "http://127.0.0.1/actions/T0STUB/1/x",  # never used by the listener
        "actions": [
            {
                "action_id": action_id,
                "block_id": "canary_gate",
                "text": {"type": "plain_text", "text": action_id},
                "value": value,
                "type": "button",
                "action_ts": now,
            }
        ],
    }


def send_interaction(
    url: str,
    secret: str,
    payload: dict[str, Any],
    *,
    timestamp: int | None = None,
    signature: str | None = None,
) -> tuple[int, str]:
    """POST `payload=<json>` form-encoded with Slack's headers; returns (status, body)."""
    body = urllib.parse.urlencode({"payload": json.dumps(payload)})
    ts = str(int(time.time()) if timestamp is None else timestamp)
    request = urllib.request.Request(
        url,
        data=body.encode(),
        method="POST",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": signature or sign(secret, ts, body),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
