"""The approval listener: Slack button clicks → decisions on paused release runs.

Slack sends interactivity requests (form-encoded `payload=<json>`) to this server, or over
Socket Mode when SLACK_APP_TOKEN is set. Every HTTP request must carry a valid Slack
signature made within the last 5 minutes, else 401. A click is then checked step by step:
the button's signed binding, the run paused at that gate, the clicking user among the
gate's approvers and the four-eyes rule; only then is the run resumed through the
Prefect API. Refusals are answered with an ephemeral message; the run stays paused.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from slack_bolt import App, BoltRequest
from slack_sdk import WebClient
from slack_sdk.signature import SignatureVerifier

from canary.approvals.decisions import AlreadyDecided, DecisionError, NotAllowed, decide
from canary.slack.api import group_members, slack_client
from canary.slack.buttons import APPROVE_ACTION, REJECT_ACTION, BindingError, verify_binding

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
_MAX_BODY = 1 << 20


class ListenerConfig:
    """Secrets and endpoints, from the environment."""

    def __init__(self, env: dict[str, str] | None = None):
        env = dict(os.environ if env is None else env)
        self.bot_token = env.get("SLACK_BOT_TOKEN", "")
        self.signing_secret = env.get("SLACK_SIGNING_SECRET", "")
        self.binding_key = env.get("CANARY_BINDING_KEY") or self.signing_secret
        self.app_token = env.get("SLACK_APP_TOKEN", "")
        self.api_url = env.get("SLACK_API_URL")

    def missing(self) -> list[str]:
        names = {"SLACK_BOT_TOKEN": self.bot_token, "SLACK_SIGNING_SECRET": self.signing_secret}
        return [name for name, value in names.items() if not value]


def build_app(config: ListenerConfig, client: WebClient | None = None) -> App:
    client = client or slack_client(config.bot_token, config.api_url)
    # token_verification_enabled=False: no eager auth.test against slack.com at start-up.
    app = App(
        client=client,
        signing_secret=config.signing_secret,
        token_verification_enabled=False,
    )
    app.action(APPROVE_ACTION)(_on_click("approve", config.binding_key))
    app.action(REJECT_ACTION)(_on_click("reject", config.binding_key))
    return app


def _on_click(decision: str, key: str) -> Callable[..., None]:
    def handle(ack: Callable[..., Any], body: dict[str, Any], client: WebClient) -> None:
        ack()
        _handle_click(decision, key, body, client)

    return handle


def _handle_click(decision: str, key: str, body: dict[str, Any], client: WebClient) -> None:
    user = body["user"]["id"]
    channel = (body.get("channel") or {}).get("id") or body["container"]["channel_id"]
    action = body["actions"][0]

    def tell(text: str) -> None:
        client.chat_postEphemeral(channel=channel, user=user, text=text)

    try:
        binding = verify_binding(action.get("value", ""), key)
    except BindingError as exc:
        log.warning("refused a click by %s: %s", user, exc)
        tell(f":warning: Not accepted: {exc}.")
        return
    try:
        decided = decide(
            binding.run_id,
            "approve" if decision == "approve" else "reject",
            user,
            gate=binding.gate,
            reason="approved in Slack" if decision == "approve" else "rejected in Slack",
            members=lambda group: group_members(client, group),
        )
    except AlreadyDecided as exc:
        tell(f":information_source: Already decided: {exc}.")
    except NotAllowed as exc:
        log.info("refused %s by %s: %s", decision, user, exc)
        tell(f":no_entry_sign: You are not allowed to decide this gate: {exc}.")
    except DecisionError as exc:
        tell(f":warning: {exc}.")
    else:
        log.info("%s %s at run %s", decided.status, decided.gate, decided.run_id)
        _mark_decided(client, channel, body.get("message") or {}, decided.status, user)


def _mark_decided(
    client: WebClient, channel: str, message: dict[str, Any], status: str, user: str
) -> None:
    """Replace the buttons of the clicked message by who decided and when."""
    at = datetime.now(UTC).strftime("%H:%M:%S UTC")
    verdict = f"{status.capitalize()} by <@{user}> at {at}"
    blocks = [b for b in message.get("blocks", []) if b.get("type") != "actions"]
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": verdict}]})
    client.chat_update(channel=channel, ts=message["ts"], text=verdict, blocks=blocks)


# --- HTTP ---------------------------------------------------------------------------------


def make_server(app: App, config: ListenerConfig, host: str, port: int) -> ThreadingHTTPServer:
    verifier = SignatureVerifier(config.signing_secret)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._send(200 if self.path == "/health" else 404, "ok")

        def do_POST(self) -> None:
            if self.path.split("?")[0] != EVENTS_PATH:
                self._send(404, "not found")
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > _MAX_BODY:
                self._send(413, "too large")
                return
            body = self.rfile.read(length).decode("utf-8", "replace")
            if not _signed(verifier, body, self.headers):
                self._send(401, "invalid signature or stale timestamp")
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            response = app.dispatch(BoltRequest(body=body, headers=headers))
            self._send(response.status, response.body, response.headers)

        def _send(self, status: int, body: str, headers: dict[str, Any] | None = None) -> None:
            data = body.encode()
            self.send_response(status)
            for name, values in (headers or {}).items():
                if name.lower() != "content-length":
                    for value in values if isinstance(values, list | tuple) else [values]:
                        self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

    return ThreadingHTTPServer((host, port), Handler)


def _signed(verifier: SignatureVerifier, body: str, headers: Any) -> bool:
    """Slack's v0 signature over the body, made at most 5 minutes ago."""
    try:
        return verifier.is_valid(
            body=body,
            timestamp=headers.get("X-Slack-Request-Timestamp"),
            signature=headers.get("X-Slack-Signature"),
        )
    except ValueError:  # a timestamp that is not a number
        return False


def serve(host: str = "127.0.0.1", port: int = 3000, env: dict[str, str] | None = None) -> int:
    """Run the listener in the foreground until interrupted."""
    config = ListenerConfig(env)
    missing = config.missing()
    if missing:
        print(f"canary approvals serve: set {' and '.join(missing)}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Prefect API call
    app = build_app(config)
    if config.app_token:
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        print("listening over Socket Mode", flush=True)
        SocketModeHandler(app, config.app_token).start()
        return 0
    server = make_server(app, config, host, port)
    bound_host, bound_port = server.server_address[:2]
    print(f"listening on http://{bound_host}:{bound_port}{EVENTS_PATH}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
