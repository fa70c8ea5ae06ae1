"""The approval listener: Slack button clicks → decisions on paused release runs.

Slack sends interactivity requests (form-encoded `payload=<json>`) to this server, or over
Socket Mode when SLACK_APP_TOKEN is set. The HTTP server (Bolt's ASGI adapter on uvicorn,
see listener_http) bounds what a request may cost; Bolt then refuses, with 401, every
request without a valid Slack signature made within the last 5 minutes, and a click that
is not well formed gets 400. A click is then checked step by step: the button's signed
binding, the run paused at that gate, the clicking user among the gate's approvers and
the four-eyes rule; only then is the run resumed through the Prefect API. Refusals are
answered with an ephemeral message; the run stays paused.

The operators' buttons of a thread's parent message (Pause or Resume, Promote, Abort) are
checked the same way: the signed binding of run and action, the button clicked being the
one the value was signed for, the user among the plan's approvers; then the request goes
to the run as `canary pause|resume|promote|abort` would send it (canary.control.requests).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from slack_bolt import App, BoltRequest, BoltResponse
from slack_bolt.middleware import Middleware
from slack_sdk import WebClient

from canary.approvals.decisions import AlreadyDecided, DecisionError, NotAllowed, decide
from canary.approvals.listener_http import (
    EVENTS_PATH,
    MAX_CONNECTIONS,
    READ_TIMEOUT,
    bind,
    uvicorn_server,
)
from canary.errors import BadInput
from canary.slack.api import group_members, slack_client
from canary.slack.buttons import (
    APPROVE_ACTION,
    OPERATOR_ACTIONS,
    REJECT_ACTION,
    BindingError,
    operator_binding,
    verify_binding,
)

log = logging.getLogger(__name__)

READ_TIMEOUT_ENV = "CANARY_LISTENER_READ_TIMEOUT"
MAX_CONNECTIONS_ENV = "CANARY_LISTENER_MAX_CONNECTIONS"


class ListenerConfig:
    """Secrets, endpoints and limits, from the environment."""

    def __init__(self, env: dict[str, str] | None = None):
        env = dict(os.environ if env is None else env)
        self.bot_token = env.get("SLACK_BOT_TOKEN", "")
        self.signing_secret = env.get("SLACK_SIGNING_SECRET", "")
        self.binding_key = env.get("CANARY_BINDING_KEY") or self.signing_secret
        self.app_token = env.get("SLACK_APP_TOKEN", "")
        self.api_url = env.get("SLACK_API_URL")
        self.limit_problems: list[str] = []
        self.read_timeout = self._number(env, READ_TIMEOUT_ENV, READ_TIMEOUT, float)
        self.max_connections = self._number(env, MAX_CONNECTIONS_ENV, MAX_CONNECTIONS, int)

    def missing(self) -> list[str]:
        names = {"SLACK_BOT_TOKEN": self.bot_token, "SLACK_SIGNING_SECRET": self.signing_secret}
        return [name for name, value in names.items() if not value]

    def _number(self, env: dict[str, str], name: str, default: Any, kind: type) -> Any:
        text = env.get(name)
        if not text:
            return default
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not 0 < value <= 3600:  # also refuses NaN
            self.limit_problems.append(
                f"{name} must be a number above 0 and at most 3600, not {text!r}"
            )
            return default
        return value


def build_app(config: ListenerConfig, client: WebClient | None = None) -> App:
    client = client or slack_client(config.bot_token, config.api_url)
    # token_verification_enabled=False: no eager auth.test against slack.com at start-up.
    app = App(
        client=client,
        signing_secret=config.signing_secret,
        token_verification_enabled=False,
    )
    app.use(_WellFormed())  # after Bolt's own middleware: the signature is checked by then
    app.action(APPROVE_ACTION)(_on_click("approve", config.binding_key))
    app.action(REJECT_ACTION)(_on_click("reject", config.binding_key))
    for action_id, action in OPERATOR_ACTIONS.items():
        app.action(action_id)(_on_click(action, config.binding_key, _handle_operator_click))
    return app


@dataclass(frozen=True)
class Click:
    """What the listener needs from a block_actions payload."""

    user: str
    channel: str
    value: str
    message: dict[str, Any]

    @classmethod
    def from_payload(cls, body: dict[str, Any]) -> Click:
        """The click, or ValueError saying what the payload lacks."""
        if body.get("type") != "block_actions":
            raise ValueError("not a block_actions payload")
        actions = body.get("actions")
        if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
            raise ValueError("no action")
        value = actions[0].get("value", "")
        user = _get(body, "user", "id")
        channel = _get(body, "channel", "id") or _get(body, "container", "channel_id")
        message = body.get("message") or {}
        for what, given in (("user.id", user), ("channel", channel), ("action value", value)):
            if not isinstance(given, str) or not given:
                raise ValueError(f"no {what}")
        if not isinstance(message, dict):
            raise ValueError("message is not an object")
        return cls(user, channel, value, message)


def _get(body: dict[str, Any], outer: str, inner: str) -> Any:
    part = body.get(outer)
    return part.get(inner) if isinstance(part, dict) else None


class _WellFormed(Middleware):
    """400 for a payload that is no click. A Middleware, not a function: Bolt builds every
    argument a function could ask for first, and some of them fail on such payloads."""

    def process(
        self, *, req: BoltRequest, resp: BoltResponse, next: Callable[[], BoltResponse]
    ) -> BoltResponse | None:
        try:
            Click.from_payload(req.body)
        except ValueError as exc:
            log.info("refused a malformed interaction: %s", exc)
            return BoltResponse(status=400, body=f"malformed interaction: {exc}")
        return next()


ClickHandler = Callable[[str, str, "Click", WebClient], None]


def _on_click(action: str, key: str, handler: ClickHandler | None = None) -> Callable[..., None]:
    """Bolt's listener for a button: acknowledge at once, then `handler` (a gate's by default)."""
    handled = handler or _handle_click

    def handle(ack: Callable[..., Any], body: dict[str, Any], client: WebClient) -> None:
        ack()
        handled(action, key, Click.from_payload(body), client)

    return handle


def _handle_click(decision: str, key: str, click: Click, client: WebClient) -> None:
    user, channel = click.user, click.channel

    def tell(text: str) -> None:
        client.chat_postEphemeral(channel=channel, user=user, text=text)

    try:
        binding = verify_binding(click.value, key)
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
        _mark_decided(client, channel, click.message, decided.status, user)


def _handle_operator_click(action: str, key: str, click: Click, client: WebClient) -> None:
    """A click on the parent message's Pause, Resume, Promote or Abort button."""
    from canary.approvals.decisions import abort
    from canary.control.requests import AlreadyDecided as Taken
    from canary.control.requests import NotAllowed as Refused
    from canary.control.requests import judge_abort, request

    user, channel = click.user, click.channel

    def tell(text: str) -> None:
        client.chat_postEphemeral(channel=channel, user=user, text=text)

    try:
        binding = verify_binding(click.value, key)
        if binding.gate != operator_binding(action):
            raise BindingError("the button's value was signed for another button")
    except BindingError as exc:
        log.warning("refused a %s click by %s: %s", action, user, exc)
        tell(f":warning: Not accepted: {exc}.")
        return
    members = lambda group: group_members(client, group)  # noqa: E731
    try:
        if action == "abort":
            judge_abort(binding.run_id, user, members)
            abort(binding.run_id, user)
            said = f"abort requested for run {binding.run_id}; it rolls back at its next step"
        else:
            reason = f"{action} in Slack"
            said = request(binding.run_id, action, user, reason=reason, members=members).summary()
    except (AlreadyDecided, Taken) as exc:
        tell(f":information_source: Already decided: {exc}.")
    except (NotAllowed, Refused) as exc:
        log.info("refused %s by %s: %s", action, user, exc)
        tell(f":no_entry_sign: You are not allowed to {action} this release: {exc}.")
    except BadInput as exc:  # a DecisionError or ControlError: one line for a human
        tell(f":warning: {exc}.")
    else:
        log.info("%s by %s at run %s", action, user, binding.run_id)
        tell(f":white_check_mark: {said}")


def _mark_decided(
    client: WebClient, channel: str, message: dict[str, Any], status: str, user: str
) -> None:
    """Replace the buttons of the clicked message by who decided and when."""
    if not isinstance(message.get("ts"), str):
        return  # nothing to update (a click on an ephemeral message)
    at = datetime.now(UTC).strftime("%H:%M:%S UTC")
    verdict = f"{status.capitalize()} by <@{user}> at {at}"
    blocks = [b for b in message.get("blocks") or [] if isinstance(b, dict)]
    blocks = [b for b in blocks if b.get("type") != "actions"]
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": verdict}]})
    client.chat_update(channel=channel, ts=message["ts"], text=verdict, blocks=blocks)


def serve(host: str = "127.0.0.1", port: int = 3000, env: dict[str, str] | None = None) -> int:
    """Run the listener in the foreground until interrupted."""
    config = ListenerConfig(env)
    missing = config.missing()
    if missing:
        print(f"canary approvals serve: set {' and '.join(missing)}", file=sys.stderr)
        return 2
    if config.limit_problems:
        print(f"canary approvals serve: {config.limit_problems[0]}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Prefect API call
    app = build_app(config)
    # Bolt logs each refused signature with the whole body; the listener logs one line.
    # (Set after the app: Bolt gives its middleware loggers the app logger's level.)
    logging.getLogger("slack_bolt.RequestVerification").setLevel(logging.WARNING)
    if config.app_token:
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        print("listening over Socket Mode", flush=True)
        SocketModeHandler(app, config.app_token).start()
        return 0
    sock = bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    server = uvicorn_server(
        app, read_timeout=config.read_timeout, max_connections=config.max_connections
    )
    print(f"listening on http://{bound_host}:{bound_port}{EVENTS_PATH}", flush=True)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn stops gracefully, then raises the signal again
        pass
    finally:
        sock.close()
    return 0
