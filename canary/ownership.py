"""Holding a service while its release runs, and the checkpoint that says when to stop.

`guarding` runs before anything changes in the cluster: it decides the release id and
where to resume (canary.resume), and takes the service's lease (canary.lease) or refuses
(ReleaseRefused) in one line naming the holder. While the release runs, one thread
renews the lease, another watches for `canary abort` and cancellation
(canary.stopping), a third for operators' requests (canary.control.watch); when it ends,
the lease is given back with the outcome.

`checkpoint` runs before every phase and every analysis round: it raises when the release
must not go on (aborted, cancelled, terminated, or the lease lost to another release).
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

from canary.control.watch import ReleaseControl
from canary.errors import BadInput
from canary.identity import release_key
from canary.lease import LeaseHeld, LeaseLost, RouteLease
from canary.notify.console import run_logger
from canary.release import Release
from canary.resume import unfinished
from canary.stopping import StopWatch, stop_requested
from canary.termination import TerminationWatch

log = logging.getLogger(__name__)

LEASE_TTL_ENV = "CANARY_LEASE_TTL"
DEFAULT_LEASE_TTL = 30.0


class ReleaseRefused(BadInput):
    """The release did not start: the service is held by another release. Nothing changed."""


@dataclass
class Guarded:
    """A release holding its service, with the release id and resume point in force."""

    release: Release
    resume_from: str | None
    holder: str
    lease: RouteLease
    stop_watch: StopWatch
    control: ReleaseControl
    lost: LeaseLost | None = None
    termination: TerminationWatch = field(default_factory=TerminationWatch)
    _stop: threading.Event = field(default_factory=threading.Event)

    def heartbeat(self) -> None:
        """Renew the lease every third of its TTL until stopped, or until it is lost."""
        while not self._stop.wait(self.lease.ttl / 3):
            try:
                self.lease.renew(self.release.release_id, self.holder)
            except LeaseLost as exc:
                self.lost = exc
                return
            except Exception as exc:  # the API is down: try again next beat
                log.warning("renewing the lease of %s failed: %s", self.release.release_id, exc)

    def let_go(self) -> None:
        self._stop.set()
        self.stop_watch.close()
        self.control.close()

    def give_back(self, outcome: str) -> None:
        try:
            self.lease.release(self.release.release_id, self.holder, outcome)
        except Exception as exc:  # it expires by itself; never hide how the release ended
            log.warning("giving back the lease of %s failed: %s", self.release.release_id, exc)


_live: dict[str, Guarded] = {}  # by release id, and by holder (the flow run id)
_live_lock = threading.Lock()


def lease_ttl() -> float:
    return float(os.environ.get(LEASE_TTL_ENV) or DEFAULT_LEASE_TTL)


@contextlib.contextmanager
def guarding(release: Release, explicit_id: bool = False) -> Iterator[Guarded]:
    """Hold the service for the block; refuse (ReleaseRefused) before any change if held.

    `explicit_id`: the release id was chosen by the caller (`--release-id`), so an
    unfinished release under another id is refused rather than adopted. The lease is given
    back with the outcome when the block ends with the release's own result or exception;
    a crash or a termination leaves it to the flow's state hooks.
    """
    guarded = claim(release, explicit_id)
    name = guarded.release.release_id
    threads = [  # with this context: the Prefect settings and client the run uses
        threading.Thread(
            target=contextvars.copy_context().run, args=(work,), name=f"{what}-{name}", daemon=True
        )
        for what, work in (
            ("lease", guarded.heartbeat),
            ("stop", guarded.stop_watch.watch),
            ("operators", guarded.control.watch.watch),
        )
    ]
    with _live_lock:
        _live[name] = _live[guarded.holder] = guarded
    for thread in threads:
        thread.start()
    guarded.termination.open()
    try:
        yield guarded
    except Exception as exc:
        result = getattr(exc, "result", None)
        guarded.let_go()
        guarded.give_back(getattr(result, "outcome", "failed"))
        raise
    except BaseException:
        guarded.let_go()  # a termination: the on_crashed/on_cancellation hook rolls back
        raise
    else:
        guarded.let_go()
        guarded.give_back("promoted")
    finally:
        guarded.termination.close()
        for thread in threads:
            thread.join(timeout=5)
        with _live_lock:
            _live.pop(name, None)
            _live.pop(guarded.holder, None)


def claim(release: Release, explicit_id: bool = False) -> Guarded:
    """Decide the release id and resume point, and take the service's lease."""
    plan = release.plan
    lease = RouteLease(release.target.api_client(), plan, ttl=lease_ttl())
    found = unfinished(plan, lease.read())
    release_id, resume_from = release.release_id, None
    if found is not None:
        if explicit_id and release.release_id != found.release_id:
            raise ReleaseRefused(
                f"{release_key(plan)}: release {found.release_id} is unfinished (at "
                f"{found.phase or 'its start'}); run again without --release-id, or with "
                f"--release-id {found.release_id}, to resume it"
            )
        release_id, resume_from = found.release_id, found.phase
    holder = holder_id()
    try:
        lease.acquire(release_id, holder, on_wait=run_logger(log).warning)
    except LeaseHeld as exc:
        raise ReleaseRefused(str(exc)) from None
    if resume_from is not None:
        log.info("resuming release %s of %s at %s", release_id, release_key(plan), resume_from)
    adopted = release.model_copy(update={"release_id": release_id})
    run_id = flow_run_id()
    control = ReleaseControl(adopted, run_id)
    return Guarded(adopted, resume_from, holder, lease, StopWatch(run_id), control)


def holder_id() -> str:
    """The flow run holding the lease; outside a flow run, this process."""
    return flow_run_id() or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def guarded_by(key: str) -> Guarded | None:
    """The live guard of a release id or a flow run id, in this process."""
    with _live_lock:
        return _live.get(key)


def checkpoint(release: Release) -> None:
    """Raise ReleaseStopped (or LeaseLost) when the release must not go on.

    A guarded release's guard polls for abort and cancellation in the background; a phase
    task run in a flow without a guard asks the Prefect API itself.
    """
    guarded = guarded_by(release.release_id)
    if guarded is not None:
        guarded.termination.raise_if_terminated()  # a SIGTERM that code on the way lost
        if guarded.lost is not None:
            raise guarded.lost
        if guarded.stop_watch.stopped is not None:
            raise guarded.stop_watch.stopped
        return
    run_id = flow_run_id()
    stopped = stop_requested(run_id) if run_id is not None else None
    if stopped is not None:
        raise stopped


def raise_if_terminated(release: Release) -> None:
    """Raise the termination the process got during the release, if it got one.

    A failure that comes with a lost SIGTERM may be how the signal surfaced (an error
    from the code it interrupted): the run ends terminated, as Prefect ends one.
    """
    guarded = guarded_by(release.release_id)
    if guarded is not None:
        guarded.termination.raise_if_terminated()


def flow_run_id() -> str | None:
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return None
    return str(context.flow_run.id)
