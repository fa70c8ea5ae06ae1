"""The gate an inconclusive analysis opens: who may answer, how long it waits, its key."""

from __future__ import annotations

import re

from prefect.states import Paused

from canary.approvals.inconclusive import analysis_gate, analysis_pause_key, union_of_approvers
from canary.approvals.pause import paused_gate
from canary.approvals.spec import Gate


def gate(before: str, timeout: str = "30m", **approvers: object) -> dict[str, object]:
    return {"before": before, "approvers": approvers, "timeout": timeout}


def test_the_approvers_are_those_of_every_gate_in_plan_order_without_repeats():
    gates = [
        Gate.model_validate(gate("step-1", users=["U0ONE", "U0TWO"])),
        Gate.model_validate(gate("promote", users=["U0TWO", "U0THREE"], groups=["S0ONE"])),
    ]
    union = union_of_approvers(gates)
    assert (union.users, union.groups, union.anyone) == (
        ["U0ONE", "U0TWO", "U0THREE"],
        ["S0ONE"],
        False,
    )


def test_anyone_when_a_gate_says_so_or_the_plan_has_none():
    open_gate = Gate.model_validate(gate("promote", anyone=True))
    closed = Gate.model_validate(gate("step-1", users=["U0ONE"]))
    assert union_of_approvers([closed, open_gate]).anyone
    assert union_of_approvers([]).anyone


def test_it_waits_as_long_as_the_first_gate_else_30_minutes_and_rolls_back_then(fast_plan):
    gates = [gate("step-1", "10m", users=["U0ONE"]), gate("promote", "1h", users=["U0TWO"])]
    gated = fast_plan(gates=gates)
    asked = analysis_gate(gated, "step-1", "no data for request-success-rate")
    assert (asked.timeout, asked.on_timeout, asked.four_eyes) == (600.0, "rollback", False)
    assert asked.title == "analysis inconclusive at step-1: no data for request-success-rate"
    assert analysis_gate(fast_plan(), "promote", "x").timeout == 1800.0


def test_a_long_reason_is_cut_to_the_gate_name_limit(fast_plan):
    reason = "Prometheus at http://127.0.0.1:9090 did not answer after 4 attempts"
    asked = analysis_gate(fast_plan(), "step-2", reason)
    assert len(asked.title) == 80 and asked.title.endswith("…")


def test_every_pause_key_is_new_and_reads_back_from_the_pause_key():
    keys = {analysis_pause_key("step-1") for _ in range(50)}
    assert len(keys) == 50
    for key in keys:
        assert re.fullmatch(r"analysis-step-1-[0-9a-f]{8}", key)
        # What the listener and the CLI read back from a paused run (a re-pause adds -rN).
        assert paused_gate(Paused(pause_key=f"gate-{key}")) == key
        assert paused_gate(Paused(pause_key=f"gate-{key}-r2")) == key
