"""The gate an inconclusive analysis opens during a phase.

When the Analyzer says `pause` (a Marginal score, `noData.onNoData: pause`, Prometheus
unreachable with `onUnreachable: pause`, a query Prometheus refuses), the hold asks a person
through the same mechanism as the plan's gates: a Prefect pause answered from the UI, from
Slack or with `canary approve|reject`. The people are those of the plan's gates.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from canary.approvals.spec import Approvers, Gate

if TYPE_CHECKING:
    from canary.plan import ReleasePlan

DEFAULT_TIMEOUT = 1800.0  # a plan without gates: the gates' own default
_MAX_NAME = 80  # Gate.name's limit


def analysis_gate(plan: ReleasePlan, phase: str, reason: str) -> Gate:
    """The gate asking whether the analysis may go on at `phase`, and why it asks.

    Approvers: everyone who may decide any of the plan's gates, or anyone when it has none
    (somebody must be able to answer, and without gates the plan names nobody). Timeout: the
    plan's first gate's, else 30m; a timeout always rolls back. Four-eyes does not apply:
    an approval lets the analysis go on, it never advances the release by itself.
    """
    gates = list(plan.gates)
    return Gate(
        name=_clip(f"analysis inconclusive at {phase}: {reason}"),
        before=phase,
        approvers=union_of_approvers(gates),
        timeout=gates[0].timeout if gates else DEFAULT_TIMEOUT,
        on_timeout="rollback",
    )


def union_of_approvers(gates: Sequence[Gate]) -> Approvers:
    """Users and groups of all gates, in plan order; anyone if a gate says so or none exist."""
    if not gates or any(g.approvers.anyone for g in gates):
        return Approvers(anyone=True)
    users = dict.fromkeys(u for g in gates for u in g.approvers.users)
    groups = dict.fromkeys(s for g in gates for s in g.approvers.groups)
    return Approvers(users=list(users), groups=list(groups))


def analysis_pause_key(phase: str) -> str:
    """A key no other pause of the release has, now or after it is resumed in a new run.

    The plan's gate before `phase` has the key `phase` and was decided before the phase
    began; sharing it would let that decision answer this question.
    """
    return f"analysis-{phase}-{uuid.uuid4().hex[:8]}"


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_NAME else text[: _MAX_NAME - 1] + "…"
