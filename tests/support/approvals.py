"""Answering a paused release from outside, the ways people do.

* From Slack: the approval request's buttons, clicked with a payload signed as Slack signs
  it (`click`), sent to the listener.
* From the Prefect UI's Resume form: the request the form makes,
  `POST /api/flow_runs/{id}/resume` with `{"run_input": {...}}` (`resume_as_form`), and the
  markdown the form shows above its fields (`form_description`), read from the run input
  named by the Paused state's `run_input_keyset["description"]`.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from tests.support.deployments import api_request, state_of
from tests.support.slack_stub import SlackStub, block_actions, send_interaction
from tests.support.waiting import wait_until

# --- the run's pause ---------------------------------------------------------------------


def wait_paused_at(
    run_id: UUID | str, gate: str, *, not_key: str | None = None, timeout: float = 90
) -> Any:
    """The run's Paused state once it waits at `gate` (under a key other than `not_key`)."""

    def paused() -> Any:
        state = state_of(run_id)
        key = (state.state_details.pause_key or "") if state.is_paused() else ""
        at_gate = key == f"gate-{gate}" or key.startswith(f"gate-{gate}-r")
        if state.type.value in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
            raise AssertionError(f"run {run_id} ended {state.name}: {state.message}")
        return state if at_gate and key != not_key else None

    return wait_until(paused, timeout, interval=0.25, message=f"run {run_id} to pause at {gate}")


def form_description(state: Any) -> str | None:
    """The markdown the Resume form shows for this Paused state, or None if it has none."""
    keyset = state.state_details.run_input_keyset or {}
    key = keyset.get("description")
    if not key:
        return None
    response = api_request("GET", f"/flow_runs/{state.state_details.flow_run_id}/input/{key}")
    if response.status_code == 404:
        return None
    response.raise_for_status()
    value = response.json()
    return value if isinstance(value, str) else str(value)


def resume_as_form(run_id: UUID | str, run_input: dict[str, Any]) -> dict[str, Any]:
    """The Resume form's submit: the server's orchestration result (status ACCEPT/REJECT…)."""
    response = api_request("POST", f"/flow_runs/{run_id}/resume", json={"run_input": run_input})
    response.raise_for_status()
    return response.json()


# --- Slack ---------------------------------------------------------------------------------


def approval_requests(stub: SlackStub, run_id: UUID | str) -> list[tuple[str, dict[str, Any]]]:
    """(channel, message) of every approval request with buttons posted for this run."""
    found = []
    for call in stub.calls_to("chat.postMessage"):
        message = call.response["message"]
        buttons = [b for b in message["blocks"] if b["type"] == "actions"]
        if buttons and f"|{run_id}|" in buttons[0]["elements"][0]["value"]:
            found.append((call.response["channel"], message))
    return found


def request_for(stub: SlackStub, run_id: UUID | str, gate: str) -> tuple[str, dict[str, Any]]:
    """The latest approval request with buttons for `gate`; fails if there is none."""
    for channel, message in reversed(approval_requests(stub, run_id)):
        value = _buttons(message)["elements"][0]["value"]
        if value.split("|")[2] == gate:
            return channel, message
    methods = sorted({c.method for c in stub.calls})
    raise AssertionError(
        f"no approval request with buttons for {gate} of run {run_id} reached Slack; "
        f"the stub saw {len(stub.calls)} calls: {methods}"
    )


def click(
    listener: str, secret: str, channel: str, message: dict[str, Any], user: str, action: str
) -> None:
    """`user` clicks `action` (canary_approve or canary_reject) on `message`, signed."""
    value = _buttons(message)["elements"][0]["value"]
    payload = block_actions(user, action, value, channel, message)
    status, body = send_interaction(listener, secret, payload)
    assert status == 200, body


def ephemerals_to(stub: SlackStub, user: str) -> list[str]:
    """What Slack showed `user` alone (the listener's answers to their clicks)."""
    return [
        c.params.get("text", "")
        for c in stub.calls_to("chat.postEphemeral")
        if c.params.get("user") == user
    ]


def _buttons(message: dict[str, Any]) -> dict[str, Any]:
    return next(b for b in message["blocks"] if b["type"] == "actions")
