"""`canary retry RUN`: a rolled-back release again, the same plan and version, as a new run.

The earlier run must have ended rolled back (its control record says so, canary.control.
state); the asker is judged like a pause's (the plan's approvers), then claims the earlier
run's `operator-retry` input: one retry per run, a second is told who retried it. The new
run gets the earlier run's parameters and `retry_of`, so its events and its report name
the run it retries. A run started from a deployment is retried as a new run of that
deployment (a worker runs it); one started by `canary run` runs again here, in the
foreground (canary.control.commands).
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from canary.approvals.policy import Members, refusal
from canary.approvals.store import claim_first, read_claim
from canary.control.requests import AlreadyDecided, ControlError, NotAllowed
from canary.control.state import RETRY_KEY, SlotClaim, load_record
from canary.plan import ReleasePlan
from canary.release import ReleaseTarget


class Retry(BaseModel):
    """A claimed retry: what the earlier run ran, and from where."""

    run_id: str  # the earlier, rolled-back run
    by: str
    reason: str = ""
    parameters: dict[str, Any]
    deployment_id: str | None = None

    def plan(self) -> ReleasePlan:
        """The earlier run's plan (a `canary run` or canary_release run's parameters)."""
        # JSON mode: the parameters are JSON, and the strict plan models read enums from it.
        return ReleasePlan.model_validate_json(json.dumps(self.parameters["plan"]))

    def target(self) -> ReleaseTarget:
        return ReleaseTarget.model_validate(self.parameters.get("target") or {})

    @property
    def initiator(self) -> str | None:
        return self.parameters.get("initiator")


def claim_retry(run_id: str, who: str, reason: str = "", members: Members | None = None) -> Retry:
    """Judge and claim the retry of a rolled-back run; ControlError (one line) if refused."""
    run = _ended_run(run_id)
    record = load_record(run_id)
    if record is None or record.outcome is None:
        raise ControlError(f"run {run_id} left no record of how its release ended")
    if record.outcome != "rolled-back":
        raise ControlError(
            f"run {run_id} was {record.outcome}: only a rolled-back release is retried"
        )
    why = refusal(record.model_copy(update={"four_eyes": False}), who, "retry", members)
    if why is not None:
        raise NotAllowed(why)
    claim = SlotClaim(action="retry", by=who.strip(), reason=reason.strip())
    first = claim_first(run_id, RETRY_KEY, claim)
    if first is not None:
        raise AlreadyDecided(first.decided())
    deployment = str(run.deployment_id) if run.deployment_id else None
    return Retry(
        run_id=run_id,
        by=claim.by,
        reason=claim.reason,
        parameters=dict(run.parameters),
        deployment_id=deployment,
    )


def start_from_deployment(retry: Retry) -> str:
    """The retry as a new run of the earlier run's deployment; returns its id."""
    from prefect.client.orchestration import get_client

    parameters = {**retry.parameters, "retry_of": retry.run_id}
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(
            UUID(retry.deployment_id), parameters=parameters
        )
    return str(run.id)


def retried_message(retry_of: str) -> str:
    """What a retried release says first: which run it retries, and who asked."""
    try:
        claim = read_claim(retry_of, RETRY_KEY, SlotClaim)
    except Exception:  # the release runs all the same; only the name of who asked is lost
        claim = None
    who = f" by {claim.by}" if claim is not None and claim.by else ""
    why = f": {claim.reason}" if claim is not None and claim.reason else ""
    return f"retry of rolled-back run {retry_of}, asked{who}{why}"


def _ended_run(run_id: str) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(run_id)
        except ObjectNotFound:
            raise ControlError(f"no flow run {run_id}") from None
    if run.state is None or not run.state.is_final():
        now = run.state.name if run.state is not None else "not started"
        raise ControlError(
            f"run {run_id} has not ended ({now}): only a rolled-back release is retried"
        )
    return run
