"""The approval buttons, and their signed values: which paused run and gate a click decides.

A button's `value` travels through Slack and comes back in the click; anyone who can
edit the payload could point it at another run. The value therefore carries an HMAC over
(run id, gate key), and the listener (canary.approvals.listener) refuses values whose MAC
does not match.
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


def _button(label: str, action_id: str, value: str, style: str) -> dict[str, Any]:
    return {
        "type": "button",
        "text": {"type": "plain_text", "text": label},
        "action_id": action_id,
        "value": value,
        "style": style,
    }
