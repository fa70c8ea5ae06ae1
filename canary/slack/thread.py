"""A Slack thread per release: a parent message kept up to date, one reply per transition.

The approval-requested reply carries Approve/Reject buttons whose values are signed
bindings of (flow run id, gate key); the listener in `canary.approvals.listener` acts on
clicks. Slack trouble never fails or stalls a release: the client retries rate limits
(honouring Retry-After) and server errors a bounded number of times, then the event is
logged and dropped.

Inside a flow run the thread's (channel, ts) is kept in the Prefect Variable
`canary-slack-thread-<release id>`, so a release resumed by another process carries on in
the same thread.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from canary.events import EventKind, ReleaseEvent
from canary.prefect_variables import SLACK_THREAD_PREFIX, load, store, var_name
from canary.slack.api import slack_client_from_env
from canary.slack.buttons import binding_key, gate_buttons, operator_buttons

log = logging.getLogger(__name__)

_ICON = {
    EventKind.PHASE_STARTED: ":arrow_forward:",
    EventKind.PHASE_FINISHED: ":white_check_mark:",
    EventKind.WEIGHT_CHANGED: ":twisted_rightwards_arrows:",
    EventKind.ANALYSIS: ":bar_chart:",
    EventKind.APPROVAL_REQUESTED: ":raised_hand:",
    EventKind.APPROVAL_GIVEN: ":heavy_check_mark:",
    EventKind.APPROVAL_REJECTED: ":no_entry:",
    EventKind.APPROVAL_TIMED_OUT: ":hourglass:",
    EventKind.ROLLBACK: ":rewind:",
    EventKind.PROMOTED: ":rocket:",
    EventKind.FAILED: ":x:",
    EventKind.OPERATOR_PAUSED: ":double_vertical_bar:",
    EventKind.OPERATOR_RESUMED: ":arrow_forward:",
    EventKind.OPERATOR_PROMOTED: ":fast_forward:",
    EventKind.OPERATOR_ABORTED: ":octagonal_sign:",
    EventKind.OPERATOR_RETRIED: ":repeat:",
    EventKind.OPERATOR_REQUEST: ":speech_balloon:",
}
_STATUS = {
    EventKind.APPROVAL_REQUESTED: "waiting for approval",
    EventKind.APPROVAL_REJECTED: "rejected; rolling back",
    EventKind.APPROVAL_TIMED_OUT: "approval timed out",
    EventKind.ROLLBACK: "rolled back",
    EventKind.PROMOTED: "promoted",
    EventKind.FAILED: "failed",
    EventKind.OPERATOR_PAUSED: "paused by an operator",
    EventKind.OPERATOR_ABORTED: "aborted; rolling back",
}
# Events after which the release takes no operators' action any more: no buttons.
_OVER = {EventKind.ROLLBACK, EventKind.PROMOTED, EventKind.FAILED, EventKind.OPERATOR_ABORTED}
_UNPAUSING = {EventKind.OPERATOR_RESUMED, EventKind.OPERATOR_PROMOTED, EventKind.PHASE_FINISHED}
_DECISIONS = {
    EventKind.APPROVAL_GIVEN,
    EventKind.APPROVAL_REJECTED,
    EventKind.APPROVAL_TIMED_OUT,
}


def slack_notifier_from_env(channel: str) -> SlackNotifier | None:
    """The Slack notifier for `channel`, or None when Slack is not configured."""
    client = slack_client_from_env()
    return SlackNotifier(channel, client) if client is not None else None


# --- the notifier -----------------------------------------------------------------------


@dataclass
class _Thread:
    channel: str
    ts: str
    run_id: str | None
    phase: str | None = None
    weight: int | None = None
    status: str = "in progress"
    paused: bool = False  # by an operator: the parent offers Resume instead of Pause
    over: bool = False  # promoted or rolling back: the parent offers no button
    # Approval requests per gate: (ts, blocks without the buttons).
    requests: dict[str, list[tuple[str, list[Any]]]] = field(default_factory=dict)


class SlackNotifier:
    """Implements the Notifier protocol; one thread per release id."""

    def __init__(
        self,
        channel: str,
        client: WebClient,
        *,
        ui_url: str | None = None,
        cooldown: float = 30.0,
    ):
        self.channel = channel
        self.client = client
        self.ui_url = ui_url
        self.cooldown = cooldown
        self._threads: dict[str, _Thread] = {}
        self._lock = threading.Lock()
        self._quiet_until = 0.0

    def notify(self, event: ReleaseEvent) -> None:
        with self._lock:
            if time.monotonic() < self._quiet_until:
                # Slack just failed even after retries: skip rather than slow every event.
                # The parent message catches up with the next event that gets through.
                _advance(self._thread_of(event), event)
                log.info("Slack: skipped %s for %s", event.kind.value, event.identity.release_id)
                return
            try:
                self._notify(event)
            except Exception as exc:
                self._quiet_until = time.monotonic() + self.cooldown
                log.warning(
                    "Slack: %s for %s not sent: %s",
                    event.kind.value,
                    event.identity.release_id,
                    exc,
                )

    def _thread_of(self, event: ReleaseEvent) -> _Thread:
        thread = self._threads.get(event.identity.release_id)
        if thread is None:
            channel, ts = _saved_thread(event.identity.release_id) or (self.channel, "")
            # Approval requests an earlier process posted (`requests`) are not known here, so
            # their buttons stay; a click on one is refused, as that run no longer waits.
            thread = self._threads[event.identity.release_id] = _Thread(channel, ts, run_id=None)
        thread.run_id = _current_run_id() or thread.run_id  # a resumed release is a new run
        return thread

    def _notify(self, event: ReleaseEvent) -> None:
        thread = self._thread_of(event)
        _advance(thread, event)
        if thread.ts:
            self._update_parent(thread, event)
        else:
            self._post_parent(thread, event)
        reply = self._post(
            channel=thread.channel,
            thread_ts=thread.ts,
            text=_reply_text(event),
            blocks=_reply_blocks(event, self._buttons(thread, event)),
        )
        gate = _gate_of(event)
        if event.kind is EventKind.APPROVAL_REQUESTED and gate:
            posted = [b for b in reply["message"].get("blocks", []) if b.get("type") != "actions"]
            thread.requests.setdefault(gate, []).append((reply["ts"], posted))
        elif event.kind in _DECISIONS and gate:
            self._close_requests(thread, event)

    def _post_parent(self, thread: _Thread, event: ReleaseEvent) -> None:
        response = self._post(
            channel=self.channel,
            text=_parent_text(event, thread),
            blocks=self._parent_blocks(event, thread),
        )
        # chat.update needs the channel id, which Slack returns for a #name.
        thread.channel, thread.ts = response["channel"], response["ts"]
        _save_thread(event.identity.release_id, thread)

    def _update_parent(self, thread: _Thread, event: ReleaseEvent) -> None:
        try:
            self.client.chat_update(
                channel=thread.channel,
                ts=thread.ts,
                text=_parent_text(event, thread),
                blocks=self._parent_blocks(event, thread),
            )
        except SlackApiError as exc:  # the reply still tells the news
            log.warning(
                "Slack: parent message of %s not updated: %s", event.identity.release_id, exc
            )

    def _close_requests(self, thread: _Thread, event: ReleaseEvent) -> None:
        for ts, posted in thread.requests.pop(_gate_of(event) or "", []):
            blocks = [*posted, _context(f"{_ICON[event.kind]} {event.message}")]
            try:
                self.client.chat_update(
                    channel=thread.channel, ts=ts, text=event.message, blocks=blocks
                )
            except SlackApiError as exc:
                log.warning("Slack: approval request not closed: %s", exc)

    def _post(self, **kwargs: Any) -> Any:
        return self.client.chat_postMessage(**kwargs)

    def _buttons(self, thread: _Thread, event: ReleaseEvent) -> dict[str, Any] | None:
        gate = _gate_of(event)
        if event.kind is not EventKind.APPROVAL_REQUESTED or not gate:
            return None
        key = binding_key()
        if not (key and thread.run_id):
            return None
        return gate_buttons(thread.run_id, gate, key)

    def _parent_blocks(self, event: ReleaseEvent, thread: _Thread) -> list[dict[str, Any]]:
        weight = "-" if thread.weight is None else f"{thread.weight}%"
        fields = [
            f"*Phase*\n{thread.phase or '-'}",
            f"*Status*\n{thread.status}",
            f"*Canary {event.identity.canary_version}*\n{weight}",
            f"*Stable {event.identity.stable_version}*\n"
            + ("-" if thread.weight is None else f"{100 - thread.weight}%"),
        ]
        blocks: list[dict[str, Any]] = [
            _section(
                f"*Canary release of {event.identity.service}* in `{event.identity.namespace}`: "
                f"`{event.identity.stable_version}` → `{event.identity.canary_version}`"
            ),
            {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
        ]
        link = self._run_link(thread.run_id)
        notes = [f"release `{event.identity.release_id}`", *([link] if link else [])]
        blocks.append(_context(" · ".join(notes)))
        key = binding_key() if thread.run_id and not thread.over else None
        if key and thread.run_id:
            blocks.append(operator_buttons(thread.run_id, thread.paused, key))
        return blocks

    def _run_link(self, run_id: str | None) -> str | None:
        base = self.ui_url or _ui_url()
        if not (base and run_id):
            return None
        return f"<{base.rstrip('/')}/flow-runs/flow-run/{run_id}|flow run {run_id[:8]}>"


# --- the thread across processes -------------------------------------------------------


def _thread_var(release_id: str) -> str:
    return var_name(SLACK_THREAD_PREFIX, release_id)


def _saved_thread(release_id: str) -> tuple[str, str] | None:
    """(channel, ts) of the thread an earlier process posted for this release, if any."""
    if _current_run_id() is None:  # not in a flow run (unit tests, scripts): no Prefect
        return None
    try:
        value = load(_thread_var(release_id))
    except Exception as exc:  # without it the release gets a second thread, nothing worse
        log.warning("Slack: thread of %s not looked up: %s", release_id, exc)
        return None
    if isinstance(value, dict) and value.get("channel") and value.get("ts"):
        return str(value["channel"]), str(value["ts"])
    return None


def _save_thread(release_id: str, thread: _Thread) -> None:
    if _current_run_id() is None:
        return
    try:
        store(_thread_var(release_id), {"channel": thread.channel, "ts": thread.ts})
    except Exception as exc:  # only a resumed release would miss it
        log.warning("Slack: thread of %s not saved: %s", release_id, exc)


def _gate_of(event: ReleaseEvent) -> str | None:
    """The key of the gate an approval event is about (events without one: their phase)."""
    return event.gate or event.phase


def _advance(thread: _Thread, event: ReleaseEvent) -> None:
    """Fold an event into what the parent message shows."""
    if event.phase:
        thread.phase = event.phase
    if event.canary_weight is not None:
        thread.weight = event.canary_weight
    if event.kind is EventKind.OPERATOR_PAUSED:
        thread.paused = True
    elif event.kind in _UNPAUSING or event.kind in _OVER:
        thread.paused = False
    thread.over = thread.over or event.kind in _OVER
    # While paused, analysis rounds and notes go on; the status says paused until it ends.
    thread.status = (
        _STATUS[EventKind.OPERATOR_PAUSED]
        if thread.paused
        else _STATUS.get(event.kind, "in progress")
    )


def _reply_text(event: ReleaseEvent) -> str:
    where = f"{event.phase}: " if event.phase else ""
    return f"{where}{event.kind.value}" + (f" - {event.message}" if event.message else "")


def _parent_text(event: ReleaseEvent, thread: _Thread) -> str:
    who = event.identity
    versions = f"{who.service} {who.stable_version} -> {who.canary_version}"
    return f"Canary release of {versions}: {thread.phase or '-'}, {thread.status}"


def _reply_blocks(event: ReleaseEvent, buttons: dict[str, Any] | None) -> list[dict[str, Any]]:
    headline = f"{_ICON.get(event.kind, '')} *{event.kind.value}*"
    if event.phase:
        headline += f" · `{event.phase}`"
    if event.canary_weight is not None:
        headline += f" · {event.identity.canary_version} at {event.canary_weight}%"
    blocks = [_section(headline + (f"\n{event.message}" if event.message else ""))]
    if buttons is not None:
        blocks.append(buttons)
    elif event.kind is EventKind.APPROVAL_REQUESTED:
        blocks.append(_context("Decide in the Prefect UI or with `canary approve|reject RUN_ID`."))
    blocks.append(_context(f"<!date^{int(event.time.timestamp())}^{{time_secs}}|{event.time}>"))
    return blocks


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def _current_run_id() -> str | None:
    from prefect.runtime import flow_run

    return flow_run.get_id()


def _ui_url() -> str | None:
    url = os.environ.get("PREFECT_UI_URL")
    if url:
        return url
    from prefect.settings import PREFECT_UI_URL

    return PREFECT_UI_URL.value()
