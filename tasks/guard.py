"""Who may release a service now, where a release resumes, and when it must stop.

`guarding` runs before anything changes in the cluster:

* Identity: a release is (namespace, service, canary version). A run of a plan whose
  release is unfinished in the cluster (its lease annotations are still on the
  VirtualService) adopts that release's id, so approvals already given count, and resumes
  at the phase the VirtualService says it reached: it never starts again from isolate,
  never lowers the canary's weight, never creates a second canary.
* The lease (`canary.lease`): taken before the first write, renewed by a background
  thread while the release runs, given back with the outcome when it ends. A release of
  another version holding the service refuses this run (ReleaseRefused), in one line
  naming the holder.

`checkpoint` runs before every phase and every analysis round: it raises ReleaseStopped
when `canary abort` asked the run to stop, when the run is being cancelled from Prefect,
or when the lease was lost to another release.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from canary.cluster import api_client
from canary.lease import (
    LeaseHeld,
    LeaseLost,
    VirtualServiceLease,
    annotations_of,
    identity_of,
    lease_of,
)
from canary.plan import ReleasePlan
from canary.planner import PHASE_ANNOTATION, RELEASE_ANNOTATION, phases
from tasks.context import ReleaseContext

log = logging.getLogger(__name__)

LEASE_TTL_ENV = "CANARY_LEASE_TTL"
DEFAULT_LEASE_TTL = 30.0
STOP_POLL_S = 2.0  # how soon an abort or a cancellation is seen (plus one round)
ROLLED_BACK_PHASE = "rolled-back"  # the planner's phase name for rollback routing


class ReleaseRefused(Exception):
    """The release did not start: the service is held by another release. Nothing changed."""


class ReleaseStopped(Exception):
    """The release was asked to stop; it rolls back."""


class ReleaseAborted(ReleaseStopped):
    pass


class ReleaseCancelled(ReleaseStopped):
    pass


@dataclass(frozen=True)
class Unfinished:
    """A release of the plan's identity that the cluster says has not ended."""

    release_id: str
    phase: str | None  # the last phase whose routing it applied; None: none yet


@dataclass
class Guarded:
    """A release holding its service: its context (with the release id in force)."""

    ctx: ReleaseContext
    resume_from: str | None
    holder: str
    lease: VirtualServiceLease
    run_id: str | None = None
    lost: LeaseLost | None = None
    stopped: ReleaseStopped | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def heartbeat(self) -> None:
        """Renew the lease every third of its TTL until stopped, or until it is lost."""
        while not self._stop.wait(self.lease.ttl / 3):
            try:
                self.lease.renew(self.ctx.release_id, self.holder)
            except LeaseLost as exc:
                self.lost = exc
                return
            except Exception as exc:  # the API is down: try again next beat
                log.warning("renewing the lease of %s failed: %s", self.ctx.release_id, exc)

    def watch_for_stop(self) -> None:
        """Poll `canary abort` and the run's state every STOP_POLL_S seconds.

        In a thread of its own, so that analysis rounds never wait on the Prefect API.
        """
        while self.run_id is not None and not self._stop.wait(STOP_POLL_S):
            try:
                self.stopped = stop_requested(self.run_id)
            except Exception as exc:  # the Prefect API is down: the release goes on
                log.warning("cannot tell whether %s must stop: %s", self.run_id, exc)
            if self.stopped is not None:
                return

    def give_back(self, outcome: str) -> None:
        try:
            self.lease.release(self.ctx.release_id, self.holder, outcome)
        except Exception as exc:  # it expires by itself; never hide how the release ended
            log.warning("giving back the lease of %s failed: %s", self.ctx.release_id, exc)


_live: dict[str, Guarded] = {}  # by release id, and by holder (the flow run id)
_live_lock = threading.Lock()


def lease_ttl() -> float:
    return float(os.environ.get(LEASE_TTL_ENV) or DEFAULT_LEASE_TTL)


@contextlib.contextmanager
def guarding(ctx: ReleaseContext, explicit_id: str | None = None) -> Iterator[Guarded]:
    """Hold the service for the block; refuse (ReleaseRefused) before any change if held.

    The lease is given back with the outcome when the block ends with the release's own
    result or exception; a crash or a termination leaves it to the flow's state hooks.
    """
    guarded = claim(ctx, explicit_id)
    name = guarded.ctx.release_id
    threads = [  # with this context: the Prefect settings and client the run uses
        threading.Thread(
            target=contextvars.copy_context().run, args=(work,), name=f"{what}-{name}", daemon=True
        )
        for what, work in (("lease", guarded.heartbeat), ("stop", guarded.watch_for_stop))
    ]
    with _live_lock:
        _live[guarded.ctx.release_id] = _live[guarded.holder] = guarded
    for thread in threads:
        thread.start()
    try:
        yield guarded
    except Exception as exc:
        result = getattr(exc, "result", None)
        guarded._stop.set()
        guarded.give_back(getattr(result, "outcome", "failed"))
        raise
    except BaseException:
        guarded._stop.set()  # a termination: the on_crashed/on_cancellation hook rolls back
        raise
    else:
        guarded._stop.set()
        guarded.give_back("promoted")
    finally:
        for thread in threads:
            thread.join(timeout=5)
        with _live_lock:
            _live.pop(guarded.ctx.release_id, None)
            _live.pop(guarded.holder, None)


def claim(ctx: ReleaseContext, explicit_id: str | None = None) -> Guarded:
    """Decide the release id and resume point, and take the service's lease."""
    plan = ctx.plan
    lease = VirtualServiceLease(api_client(ctx.kubeconfig, ctx.kube_context), plan, ttl=lease_ttl())
    found = unfinished(plan, lease.read())
    release_id, resume_from = ctx.release_id, None
    if found is not None:
        if explicit_id is not None and explicit_id != found.release_id:
            raise ReleaseRefused(
                f"{identity_of(plan)}: release {found.release_id} is unfinished (at "
                f"{found.phase or 'its start'}); run again without --release-id, or with "
                f"--release-id {found.release_id}, to resume it"
            )
        release_id, resume_from = found.release_id, found.phase
    holder = holder_id()
    try:
        lease.acquire(release_id, holder)
    except LeaseHeld as exc:
        raise ReleaseRefused(str(exc)) from None
    if resume_from is not None:
        log.info("resuming release %s of %s at %s", release_id, identity_of(plan), resume_from)
    released = ctx.model_copy(update={"release_id": release_id})
    return Guarded(released, resume_from, holder, lease, run_id=_flow_run_id())


def unfinished(plan: ReleasePlan, vs: dict | None) -> Unfinished | None:
    """The unfinished release of the plan's identity the VirtualService records, if any.

    One whose rollback routing was applied has ended as far as traffic goes: a new run of
    the plan is a new release (approvals given to the old one do not carry over).
    """
    held = lease_of(vs)
    if held is None or held.identity != identity_of(plan):
        return None
    notes = annotations_of(vs)
    phase = (
        notes.get(PHASE_ANNOTATION) if notes.get(RELEASE_ANNOTATION) == held.release_id else None
    )
    if phase == ROLLED_BACK_PHASE:
        return None
    known = {p.name for p in phases(plan)}
    return Unfinished(held.release_id, phase if phase in known else None)


def holder_id() -> str:
    """The flow run holding the lease; outside a flow run, this process."""
    return _flow_run_id() or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def guarded_by(key: str) -> Guarded | None:
    """The live guard of a release id or a flow run id, in this process."""
    with _live_lock:
        return _live.get(key)


# --- stopping -----------------------------------------------------------------------------


def checkpoint(ctx: ReleaseContext) -> None:
    """Raise ReleaseStopped (or LeaseLost) when the release must not go on.

    A guarded release's guard polls for abort and cancellation in the background; a phase
    task run in a flow without a guard asks the Prefect API itself.
    """
    guarded = guarded_by(ctx.release_id)
    if guarded is not None:
        if guarded.lost is not None:
            raise guarded.lost
        if guarded.stopped is not None:
            raise guarded.stopped
        return
    run_id = _flow_run_id()
    stopped = stop_requested(run_id) if run_id is not None else None
    if stopped is not None:
        raise stopped


def stop_requested(run_id: str) -> ReleaseStopped | None:
    """Why the run must stop (`canary abort`, a cancellation), or None."""
    from canary.approvals.gates import abort_requested

    if abort_requested(run_id):
        return ReleaseAborted(f"aborted (canary abort {run_id})")
    if _being_cancelled(run_id):
        return ReleaseCancelled("cancelled from Prefect")
    return None


def _being_cancelled(run_id: str) -> bool:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state
    return state is not None and (state.is_cancelling() or state.is_cancelled())


def _flow_run_id() -> str | None:
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return None
    return str(context.flow_run.id)
