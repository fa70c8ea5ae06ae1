"""Gate models, button bindings and approver rules (no server needed)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from canary.approvals.pause import paused_gate
from canary.approvals.policy import refusal
from canary.approvals.spec import Approvers
from canary.approvals.store import GateRequest
from canary.plan import PlanError, plan_from_dict
from canary.planner import phases
from canary.slack.buttons import BindingError, sign_binding, verify_binding

BASE: dict[str, Any] = {
    "service": "reviews",
    "stable": {"version": "v1"},
    "canary": {"version": "v2", "image": "reviews:v2"},
}
HEADER = {"match": [{"headers": {"end-user": {"exact": "jason"}}}]}


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"headerRoute": HEADER},
        {"analysis": {"stepWeights": [10, 50]}},
        {"analysis": {"stepWeight": 25, "maxWeight": 75}, "headerRoute": HEADER},
        {"steps": [{"weight": 5}, {"weight": 30}]},
    ],
)
def test_a_gate_may_stand_before_every_phase_the_planner_gives_it(extra):
    plan = plan_from_dict({**BASE, **extra})
    places = [p.name for p in phases(plan) if p.name not in ("isolate", "deploy", "test")]
    assert plan._gate_places() == places
    gates = [{"before": p, "approvers": {"anyone": True}} for p in places]
    assert [g.before for g in plan_from_dict({**BASE, **extra, "gates": gates}).gates] == places


def test_gate_defaults_and_camel_case_fields():
    plan = plan_from_dict(
        {
            **BASE,
            "gates": [
                {"before": "promote", "approvers": {"users": ["U024BE7LH"]}, "fourEyes": True}
            ],
            "notifications": {"slack": {"channel": "#releases"}},
        }
    )
    [gate] = plan.gates
    assert (gate.timeout, gate.on_timeout, gate.four_eyes) == (1800.0, "rollback", True)
    assert (gate.key, gate.title, gate.timeout_text) == ("promote", "gate before promote", "30m")
    assert plan.notifications.slack.channel == "#releases"


@pytest.mark.parametrize(
    ("approvers", "message"),
    [
        ({"anyone": True, "users": ["U024BE7LH"]}, "not both"),
        ({"groups": ["releasers"]}, "is not a Slack user group id"),
    ],
)
def test_bad_approvers_name_their_field(approvers, message):
    with pytest.raises(PlanError) as caught:
        plan_from_dict({**BASE, "gates": [{"before": "promote", "approvers": approvers}]})
    assert "gates[0].approvers" in str(caught.value) and message in str(caught.value)


def test_a_binding_round_trips_and_refuses_edits_and_other_keys():
    value = sign_binding("run-1", "promote", "key")
    binding = verify_binding(value, "key")
    assert (binding.run_id, binding.gate) == ("run-1", "promote")
    with pytest.raises(BindingError, match="does not match"):
        verify_binding(value.replace("run-1", "run-2"), "key")
    with pytest.raises(BindingError, match="does not match"):
        verify_binding(value.replace("promote", "cleanup"), "key")
    with pytest.raises(BindingError, match="does not match"):
        verify_binding(value, "other-key")
    with pytest.raises(BindingError, match="not a canary approval button"):
        verify_binding("approve", "key")


def request(**approvers: Any) -> GateRequest:
    return GateRequest(
        run_id="r",
        release_id="rel",
        gate="promote",
        title="gate before promote",
        approvers=Approvers(**approvers),
        four_eyes=True,
        initiator="U0INIT",
        pause_key="gate-promote",
        deadline=datetime.now(UTC),
    )


def test_approver_rules():
    users = request(users=["U0A", "U0INIT"])
    assert refusal(users, "U0A", "approve", None) is None
    assert "not an approver" in refusal(users, "U0B", "approve", None)
    assert "four-eyes" in refusal(users, "U0INIT", "approve", None)
    assert refusal(users, "U0INIT", "reject", None) is None  # stopping is always safe
    assert refusal(users, " ", "approve", None) == "the approver is not named"
    groups = request(groups=["S0TEAM"])
    assert refusal(groups, "U0B", "approve", lambda g: ["U0B"] if g == "S0TEAM" else []) is None
    assert "not an approver" in refusal(groups, "U0B", "approve", None)

    def slack_down(group: str) -> list[str]:
        raise ConnectionError("down")

    assert "not an approver" in refusal(groups, "U0B", "approve", slack_down)
    assert refusal(request(anyone=True), "anybody", "approve", None) is None


class _Paused:
    def __init__(self, key: str):
        self.state_details = type("D", (), {"pause_key": key})()

    def is_paused(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("key", "gate"),
    [
        ("gate-promote", "promote"),
        ("gate-step-1", "step-1"),
        ("gate-step-12-r3", "step-12"),
        ("gate-header-route-r2", "header-route"),
        ("1", None),
    ],
)
def test_the_gate_of_a_pause_key(key, gate):
    assert paused_gate(_Paused(key)) == gate
