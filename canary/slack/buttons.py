"""The thread's buttons, and their signed values: which run and gate (or action) a click decides.

A button's `value` travels through Slack and comes back in the click; anyone who can
edit the payload could point it at another run. The value therefore carries an HMAC over
(run id, gate key), and the listener (canary.approvals.listener) refuses values whose MAC
does not match. The operators' buttons of the thread's parent message (Pause or Resume,
Promote, Abort) sign (run id, `operator-<action>`) the same way, so a value cannot be moved
to another run nor to another button.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Any

from canary.slack.api import secret_value

APPROVE_ACTION = "canary_approve"
REJECT_ACTION = "canary_reject"
# The parent message's buttons: Slack action id -> what the button asks.
OPERATOR_ACTIONS = {
    "canary_pause": "pause",
    "canary_resume": "resume",
    "canary_promote": "promote",
    "canary_abort": "abort",
}
OPERATOR_BLOCK = "canary_operator"

_VERSION = "c1"
_SEP = "|"


class BindingError(ValueError):
    """A button value that was not issued by this pipeline (or was edited)."""


@dataclass(frozen=True)
class Binding:
    run_id: str
    gate: str


SIGNING_SECRET_BLOCK = "slack-signing-secret"  # a Prefect Secret block, when the env has none


def binding_key() -> str | None:
    """The MAC key: CANARY_BINDING_KEY if set, else the Slack signing secret (from the
    environment, or the Prefect Secret block `slack-signing-secret`)."""
    key = os.environ.get("CANARY_BINDING_KEY") or os.environ.get("SLACK_SIGNING_SECRET")
    return key or secret_value(SIGNING_SECRET_BLOCK)


def sign_binding(run_id: str, gate: str, key: str) -> str:
    if _SEP in run_id or _SEP in gate:
        raise ValueError("run id and gate key cannot contain '|'")
    return _SEP.join((_VERSION, run_id, gate, _mac(run_id, gate, key)))


def verify_binding(value: str, key: str) -> Binding:
    parts = value.split(_SEP)
    if len(parts) != 4 or parts[0] != _VERSION:
        raise BindingError("not a canary approval button")
    _, run_id, gate, mac = parts
    if not hmac.compare_digest(mac, _mac(run_id, gate, key)):
        raise BindingError("the button's value does not match its signature")
    return Binding(run_id, gate)


def _mac(run_id: str, gate: str, key: str) -> str:
    # Domain-separated so the same secret never signs anything Slack-shaped.
    message = f"canary-approval-binding\n{run_id}\n{gate}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def gate_buttons(run_id: str, gate: str, key: str) -> dict[str, Any]:
    """The Approve/Reject actions block of a gate's approval request."""
    value = sign_binding(run_id, gate, key)
    return {
        "type": "actions",
        "block_id": f"canary_gate_{gate}",
        "elements": [
            _button("Approve", APPROVE_ACTION, value, "primary"),
            _button("Reject", REJECT_ACTION, value, "danger"),
        ],
    }


def operator_binding(action: str) -> str:
    """What an operator button's value binds besides the run: its action."""
    return f"operator-{action}"


def operator_buttons(run_id: str, paused: bool, key: str) -> dict[str, Any]:
    """The parent message's actions block: Pause (Resume while paused), Promote, Abort."""
    labels = {"pause": "Pause", "resume": "Resume", "promote": "Promote", "abort": "Abort"}
    shown = ["resume" if paused else "pause", "promote", "abort"]
    styles = {"promote": "primary", "abort": "danger"}
    by_action = {action: action_id for action_id, action in OPERATOR_ACTIONS.items()}
    return {
        "type": "actions",
        "block_id": OPERATOR_BLOCK,
        "elements": [
            _button(
                labels[action],
                by_action[action],
                sign_binding(run_id, operator_binding(action), key),
                styles.get(action),
            )
            for action in shown
        ],
    }


def _button(label: str, action_id: str, value: str, style: str | None) -> dict[str, Any]:
    button = {
        "type": "button",
        "text": {"type": "plain_text", "text": label},
        "action_id": action_id,
        "value": value,
    }
    return button | ({"style": style} if style else {})
