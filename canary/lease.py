"""One release per service at a time: a lease in annotations on the route object.

The route object is the custom object that holds the service's routes, as the plan's router
names it: the VirtualService (istio) or the HTTPRoute (gateway-api).

    canary.release/lease          the release id that holds the service
    canary.release/lease-holder   the run (worker) holding it for that release
    canary.release/lease-expires  RFC3339; the holder renews it while the release runs
    canary.release/identity       <namespace>/<service>/<canary version> of that release
    canary.release/outcome        how the last release ended; removed when one starts

Every write carries the resourceVersion it read, so two writers conflict (HTTP 409) and
the loser reads again and decides again: at most one of them takes a free lease.

A live lease of another release refuses the newcomer. A lease of the same release (same
identity) but another holder is a worker that died, or one still running: the newcomer
waits for the lease to expire and takes it over, unless it sees it renewed meanwhile.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from canary.cluster import REQUEST_TIMEOUT, is_conflict, is_not_found, retrying
from canary.errors import BadInput, CanaryError
from canary.identity import release_key
from canary.plan import ReleasePlan
from canary.planner import ANNOTATION_PREFIX, unrouted
from canary.routing.custom_objects import missing_api
from canary.routing.factory import router_for

LEASE = ANNOTATION_PREFIX + "lease"
LEASE_HOLDER = ANNOTATION_PREFIX + "lease-holder"
LEASE_EXPIRES = ANNOTATION_PREFIX + "lease-expires"
IDENTITY = ANNOTATION_PREFIX + "identity"
OUTCOME = ANNOTATION_PREFIX + "outcome"
LEASE_ANNOTATIONS = (LEASE, LEASE_HOLDER, LEASE_EXPIRES)


class LeaseHeld(BadInput):
    """Another release holds the service; nothing was changed."""


class LeaseLost(CanaryError):
    """The lease was taken by another release while this one ran."""


@dataclass(frozen=True)
class Lease:
    release_id: str
    holder: str
    expires: datetime
    identity: str

    def expired(self, now: datetime | None = None) -> bool:
        return (now or datetime.now(UTC)) >= self.expires

    def describe(self) -> str:
        return f"release {self.release_id} (until {rfc3339(self.expires)})"


def annotations_of(obj: dict[str, Any] | None) -> dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("annotations") or {})


def lease_of(route: dict[str, Any] | None) -> Lease | None:
    """The lease recorded on a route object, if any (expired or not)."""
    notes = annotations_of(route)
    if not notes.get(LEASE):
        return None
    try:
        expires = datetime.fromisoformat(notes.get(LEASE_EXPIRES, "").replace("Z", "+00:00"))
    except ValueError:
        expires = datetime.min.replace(tzinfo=UTC)  # unreadable: treat as expired
    return Lease(notes[LEASE], notes.get(LEASE_HOLDER, ""), expires, notes.get(IDENTITY, ""))


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class RouteLease:
    """The lease on one plan's route object, read and written through the API."""

    def __init__(
        self,
        api: k8s.ApiClient,
        plan: ReleasePlan,
        *,
        ttl: float,
        retry_timeout: float = 30.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.plan = plan
        self.ttl = ttl
        self.retry_timeout = retry_timeout
        self._clock = clock
        self.route = router_for(plan, api).route_object()
        self._custom = k8s.CustomObjectsApi(api)

    # --- reading --------------------------------------------------------------------

    def read(self) -> dict[str, Any] | None:
        def get() -> dict[str, Any] | None:
            try:
                return self._call("get_namespaced_custom_object", name=self.name)
            except ApiException as exc:
                if is_not_found(exc):
                    return None
                raise

        return retrying(get, what=f"read {self._path}", timeout=self.retry_timeout)

    @property
    def name(self) -> str:
        return self.route.name

    @property
    def _path(self) -> str:
        return f"{self.route.plural}/{self.name}"

    # --- the lease's life -------------------------------------------------------------

    def acquire(
        self,
        release_id: str,
        holder: str,
        *,
        patience: float | None = None,
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        """Take the lease for `release_id`, or raise LeaseHeld naming who holds it.

        `patience` bounds the wait for a same-release lease to expire (default: its TTL);
        `on_wait` is told once, before that wait, what it waits for and for how long.
        """
        patience = self.ttl if patience is None else patience
        deadline = time.monotonic() + patience + 1.0
        first_seen: Lease | None = None
        while True:
            route = self.read()
            held = lease_of(route)
            if held is not None and not self._free_for(held, holder):
                if held.identity != release_key(self.plan):
                    raise LeaseHeld(self._refusal(held))
                if first_seen is not None and held.expires != first_seen.expires:
                    raise LeaseHeld(self._refusal(held, running_elsewhere=True))
                if first_seen is None and on_wait is not None:
                    on_wait(self._waiting(held, patience))
                first_seen = first_seen or held
                if time.monotonic() > deadline:
                    raise LeaseHeld(self._refusal(held, running_elsewhere=True))
                self._sleep_until(held.expires, deadline)
                continue
            if self._write(route, self._taken(route, release_id, holder)):
                return

    def renew(self, release_id: str, holder: str) -> None:
        """Push the expiry forward; LeaseLost when someone else holds the lease now."""
        while True:
            route = self.read()
            held = lease_of(route)
            if route is None or not _held_by(held, release_id, holder):
                who = held.describe() if held else "nobody"
                raise LeaseLost(f"the lease on {self._where()} is now held by {who}")
            if self._write(route, self._with(route, {LEASE_EXPIRES: self._expiry()})):
                return

    def release(self, release_id: str, holder: str, outcome: str) -> None:
        """Give the lease back and record how the release ended; no-op if not ours."""
        while True:
            route = self.read()
            held = lease_of(route)
            if route is None or not _held_by(held, release_id, holder):
                return
            changes: dict[str, str | None] = dict.fromkeys(LEASE_ANNOTATIONS)
            if self._write(route, self._with(route, changes | {OUTCOME: outcome})):
                return

    # --- plumbing ---------------------------------------------------------------------

    def _free_for(self, held: Lease, holder: str) -> bool:
        return held.holder == holder or held.expired(self._clock())

    def _taken(self, route: dict[str, Any] | None, release_id: str, holder: str) -> dict[str, Any]:
        notes: dict[str, str | None] = {
            LEASE: release_id,
            LEASE_HOLDER: holder,
            LEASE_EXPIRES: self._expiry(),
            IDENTITY: release_key(self.plan),
            OUTCOME: None,
        }
        return self._with(route if route is not None else unrouted(self.plan), notes)

    def _expiry(self) -> str:
        return rfc3339(self._clock() + timedelta(seconds=self.ttl))

    @staticmethod
    def _with(route: dict[str, Any], changes: dict[str, str | None]) -> dict[str, Any]:
        body = copy.deepcopy(route)
        notes = body["metadata"].setdefault("annotations", {})
        for key, value in changes.items():
            if value is None:
                notes.pop(key, None)
            else:
                notes[key] = value
        return body

    def _write(self, current: dict[str, Any] | None, body: dict[str, Any]) -> bool:
        """One conditional write; False when another writer came first (read again)."""

        def write() -> dict[str, Any]:
            if current is None:
                return self._call("create_namespaced_custom_object", body=body)
            return self._call("replace_namespaced_custom_object", name=self.name, body=body)

        try:
            retrying(
                write,
                what=f"write the lease on {self._path}",
                timeout=self.retry_timeout,
                retry_conflicts=False,  # a conflict means: read again, decide again
            )
        except ApiException as exc:
            if is_conflict(exc):
                return False
            if current is None and is_not_found(exc):
                raise missing_api(self.route.group, self.route.version, self.route.plural) from None
            raise
        return True

    def _refusal(self, held: Lease, *, running_elsewhere: bool = False) -> str:
        if running_elsewhere:
            return (
                f"{self._where()} is being released by {held.describe()}, still running in "
                f"another worker ({held.holder}); not starting a second run"
            )
        return (
            f"{self._where()} is being released by {held.describe()} "
            f"[{held.identity or 'unknown'}]; one release per service at a time"
        )

    def _waiting(self, held: Lease, patience: float) -> str:
        left = max(0.0, (held.expires - self._clock()).total_seconds())
        wait = min(left, patience)
        return (
            f"{self._where()}: {held.describe()} holds the lease ({held.holder}); waiting up to "
            f"{wait:.0f}s for it to expire (its run stopped) to take it over, unless its "
            f"holder renews it (its run still goes)"
        )

    def _where(self) -> str:
        return f"{self.plan.namespace}/{self.plan.service}"

    def _sleep_until(self, expires: datetime, deadline: float) -> None:
        left = (expires - self._clock()).total_seconds()
        # Look again at least every second: a renewal shows that the holder is alive.
        time.sleep(max(0.05, min(left, 1.0, deadline - time.monotonic())))

    def _call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        route = self.route
        return getattr(self._custom, method)(
            route.group,
            route.version,
            route.namespace,
            route.plural,
            _request_timeout=REQUEST_TIMEOUT,
            **kwargs,
        )


def _held_by(held: Lease | None, release_id: str, holder: str) -> bool:
    return held is not None and (held.release_id, held.holder) == (release_id, holder)
