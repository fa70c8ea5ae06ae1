"""Where traffic goes: the router interface the release drives.

A router applies and reads one routing state of one traffic API; the planner
(`canary.planner`) decides what that state is, and `canary.routing.factory` picks the
router a plan needs (`istio.py`: VirtualService and DestinationRule; `gateway_api.py`:
HTTPRoute and per-version Services). Callers hold only the `Router` interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from canary.errors import CanaryError
from canary.planner import RoutingState

__all__ = ["RouteObject", "Router", "RoutingMismatch", "RoutingState"]


class RoutingMismatch(CanaryError):
    """What the cluster holds after writing is not what was written."""


@dataclass(frozen=True)
class RouteObject:
    """The custom object that holds a service's routes.

    The release's lease and the phase it reached are recorded in its annotations
    (canary.lease, canary.resume), so they live where the routing does.
    """

    group: str
    version: str
    plural: str
    kind: str
    namespace: str
    name: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    def describe(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@runtime_checkable
class Router(Protocol):
    def route_object(self) -> RouteObject:
        """The object holding the routes (VirtualService, HTTPRoute)."""
        ...

    def get_routes(self) -> RoutingState | None:
        """The routing the cluster holds now; None when none of it exists."""
        ...

    def set_routes(self, routing: RoutingState) -> None:
        """Make the cluster hold `routing`, make-before-break; no write when it already does.

        At no moment may a route name a destination that does not exist. Raises
        RoutingMismatch when the state read back afterwards differs.
        """
        ...

    def verify(self, routing: RoutingState) -> None:
        """Read the routing back; raise RoutingMismatch unless the cluster holds `routing`."""
        ...
