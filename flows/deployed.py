"""The flows Prefect deployments run (see deploy/prefect.yaml).

* `release` (flow `canary-release`, deployment `canary-release`): one release, started from
  the Prefect UI's parameter form, the API or the release train. The plan is a file under
  the configs directory or given inline; `version` and `image` release another version than
  the plan's canary. It runs the `canary_release` flow's body in its own run, so every
  release, from `canary run` or a deployment, is a run of the flow `canary-release`.
* `release_train` (flow and deployment `release-train`, on a cron schedule): one
  `canary-release` run per plan that declares a pending version (`schedule` in the plan).

Two releases of one service never run at once: each holds the Prefect global concurrency
limit `canary-release-<namespace>-<service>` (one slot) while it runs; another waits for
it, at most `lock_timeout` seconds, then fails saying so.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from canary.errors import CanaryError
from canary.plan import PlanError, Problem, ReleasePlan, load_plan
from canary.plan.configs import plan_files, plan_names, plan_to_release
from canary.plan.versions import pending_release
from canary.release import ReleaseResult, ReleaseTarget
from flows.canary_release import canary_release

DEPLOYMENT = "canary-release/canary-release"
FIRST_LOCK_TRY_S = 1.0

# What the parameter form checks before a run is created: the API server refuses a run
# whose parameters do not fit (enforce_parameter_schema in deploy/prefect.yaml).


def _plan_file_choices() -> dict[str, Any]:
    """The plan files in the configs directory when the deployment is registered.

    A choice in the form, so a mistyped name is refused when the run is created; a file
    added later is offered once the deployment is registered again. (Only the schema says
    it: a run created without the schema check still reads only from the directory.)
    """
    names = plan_names()
    return {"title": "Plan file", **({"enum": names} if names else {})}


def _title(title: str) -> Any:
    # Prefect titles a flow parameter with its name, unless the schema's own extra says.
    return Field(json_schema_extra={"title": title})


PlanFile = Annotated[str, Field(min_length=1, json_schema_extra=_plan_file_choices())]
Version = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$", max_length=63)
]
Text = Annotated[str, Field(min_length=1, max_length=1024)]
Seconds = Annotated[float, Field(ge=0, le=86_400)]


class ReleaseLocked(CanaryError):
    """Another release of the same service kept its lock past our patience."""


@flow(
    name="canary-release",
    persist_result=False,
    # The release flow's own: a cancelled or crashed run is rolled back.
    on_cancellation=canary_release.on_cancellation_hooks,
    on_crashed=canary_release.on_crashed_hooks,
)
def release(
    plan: Annotated[PlanFile | ReleasePlan, _title("Plan")],
    version: Annotated[Version | None, _title("Version")] = None,
    image: Annotated[Text | None, _title("Image")] = None,
    kubeconfig: Annotated[Text | None, _title("Kubeconfig")] = None,
    context: Annotated[Text | None, _title("Kubeconfig context")] = None,
    mesh_url: Annotated[Text | None, _title("Mesh URL")] = None,
    initiator: Annotated[Text | None, _title("Initiator (your Slack member id)")] = None,
    lock_timeout: Annotated[Seconds, _title("Lock timeout (seconds)")] = 3600.0,
    retry_of: Annotated[Text | None, _title("Retry of run")] = None,
) -> ReleaseResult | None:
    """Canary release of one service, phase by phase; any failure rolls back.

    Args:
        plan: A plan file of the configs directory, or a plan written here.
        version: Release this version instead of the plan's canary.version.
        image: The image of that version (required with a new version, unless the plan's
            canary is a manifest).
        kubeconfig: Path of a kubeconfig; default $KUBECONFIG, else the in-cluster account.
        context: The kubeconfig context to use.
        mesh_url: Where the test phase sends its checks (default: the plan's tests.baseUrl).
        initiator: Your Slack member id (U...). With it, a fourEyes gate needs someone else
            to approve; left empty, it needs two different approvers.
        lock_timeout: Seconds to wait while another release of the service runs.
        retry_of: The rolled-back run this run retries (set by `canary retry`).
    """
    _warn_unset_job_variables()
    chosen = plan_to_release(plan, version, image)
    target = ReleaseTarget(kubeconfig=kubeconfig, kube_context=context, mesh_url=mesh_url)
    with release_lock(chosen, lock_timeout):
        if already_released(chosen, target):
            get_run_logger().info(
                "%s already runs alone in %s: nothing to release",
                chosen.canary_deployment,
                chosen.namespace,
            )
            return None
        return canary_release.fn(chosen, target, initiator=initiator, retry_of=retry_of)


def _warn_unset_job_variables() -> None:
    """A job variable `prefect deploy` found unset reaches the run as its `{{ $NAME }}`."""
    for name, value in sorted(os.environ.items()):
        if value.startswith("{{ $") and value.endswith("}}"):
            get_run_logger().warning(
                "%s is %r: set it in the environment of `prefect deploy` "
                "(deploy/prefect.yaml reads it from there)",
                name,
                value,
            )


# --- one release per service at a time ----------------------------------------------------


def lock_name(plan: ReleasePlan) -> str:
    return f"canary-release-{plan.namespace}-{plan.service}"


@contextlib.contextmanager
def release_lock(plan: ReleasePlan, timeout: float) -> Iterator[None]:
    """Hold the service's release slot in the block; wait at most `timeout` for it."""
    from prefect.concurrency.sync import concurrency

    name = lock_name(plan)
    ensure_lock(name)
    # A lease renewal that fails (the API briefly away) must not kill a release halfway:
    # the cluster-side lease (canary/ownership.py) still keeps other releases out.
    hold = functools.partial(concurrency, name, strict=True, raise_on_lease_renewal_failure=False)
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(hold(timeout_seconds=FIRST_LOCK_TRY_S))
        except TimeoutError:
            get_run_logger().info(
                "another release of %s/%s is running; waiting for it (at most %gs)",
                plan.namespace,
                plan.service,
                timeout,
            )
            try:
                left = max(timeout - FIRST_LOCK_TRY_S, 0.1)
                held.enter_context(hold(timeout_seconds=left))
            except TimeoutError:
                raise ReleaseLocked(
                    f"another release of {plan.namespace}/{plan.service} kept running for "
                    f"more than {timeout:g}s; this one did not start (lock {name})"
                ) from None
        yield


def ensure_lock(name: str) -> None:
    """Create the one-slot limit unless it exists (an operator may have changed it)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # another run made it meanwhile
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1)
                )


def already_released(plan: ReleasePlan, target: ReleaseTarget) -> bool:
    """The canary runs and the stable Deployment is gone: an earlier run released it.

    Without this, a run queued behind that release would find no stable to start from.
    """
    from canary.cluster import Cluster, is_ready

    cluster = Cluster(target.api_client(), plan.namespace)
    canary = cluster.get_deployment(plan.canary_deployment)
    return is_ready(canary) and cluster.get_deployment(plan.stable_deployment) is None


# --- the release train ---------------------------------------------------------------------


class TrainCar(BaseModel):
    """What the train did with one plan file."""

    plan: str
    service: str = ""
    version: str = ""
    action: str  # started, nothing pending, already released, already queued, invalid
    flow_run_id: str | None = None
    detail: str = ""


@flow(name="release-train", persist_result=False)
def release_train(
    configs: str = "configs",
    kubeconfig: str | None = None,
    context: str | None = None,
    mesh_url: str | None = None,
    deployment: str = DEPLOYMENT,
) -> list[TrainCar]:
    """Start one canary-release run for every plan that declares a pending version.

    Args:
        configs: The directory of plan files (*.yaml, *.yml).
        kubeconfig: Passed to each release; default $KUBECONFIG, else in-cluster.
        context: Passed to each release: the kubeconfig context.
        mesh_url: Passed to each release: where the test phase sends its checks.
        deployment: The deployment the releases run as.
    """
    target = ReleaseTarget(kubeconfig=kubeconfig, kube_context=context, mesh_url=mesh_url)
    cars = [_board(path, deployment, target) for path in plan_files(Path(configs))]
    logger = get_run_logger()
    for car in cars:
        logger.info("%s: %s %s %s", car.plan, car.action, car.version, car.detail)
    invalid = [car for car in cars if car.action == "invalid"]
    if invalid:  # the valid ones are on their way; the run still ends Failed to be seen
        raise PlanError([Problem(car.plan, 0, "", car.detail) for car in invalid])
    return cars


def _board(path: Path, deployment: str, target: ReleaseTarget) -> TrainCar:
    try:
        plan = load_plan(path)
        pending = pending_release(plan, str(path))
    except PlanError as exc:
        return TrainCar(plan=str(path), action="invalid", detail=str(exc))
    if pending is None:
        return TrainCar(plan=str(path), service=plan.service, action="nothing pending")
    car = TrainCar(
        plan=str(path), service=pending.service, version=pending.canary.version, action="started"
    )
    if _queued(pending, deployment):
        return car.model_copy(update={"action": "already queued"})
    with contextlib.suppress(Exception):  # unreadable cluster: the release will say why
        if already_released(pending, target):
            return car.model_copy(update={"action": "already released"})
    run_id = _start(pending, deployment, target)
    return car.model_copy(update={"flow_run_id": run_id, "detail": f"(flow run {run_id})"})


def service_tag(plan: ReleasePlan) -> str:
    return f"service:{plan.namespace}/{plan.service}"


def _start(plan: ReleasePlan, deployment: str, target: ReleaseTarget) -> str:
    from prefect.deployments import run_deployment

    parameters: dict[str, Any] = {
        "plan": plan.model_dump(mode="json", by_alias=True, exclude_none=True),
        # The `release` flow's parameters for the target, one by one (its form's fields).
        "kubeconfig": target.kubeconfig,
        "context": target.kube_context,
        "mesh_url": target.mesh_url,
    }
    parameters = {key: value for key, value in parameters.items() if value is not None}
    run = run_deployment(
        deployment,
        parameters=parameters,
        timeout=0,  # start it and go on: the releases run side by side, one per service
        flow_run_name=f"{plan.service}-{plan.canary.version}",
        tags=["release-train", service_tag(plan)],
    )
    return str(run.id)


def _queued(plan: ReleasePlan, deployment: str) -> bool:
    """A run of this service's release started earlier has not finished yet."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType

    open_states = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED]
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[service_tag(plan)]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=open_states)),
            ),
            deployment_filter=DeploymentFilter(
                name=DeploymentFilterName(any_=[deployment.split("/")[-1]])
            ),
            limit=1,
        )
    return bool(runs)
