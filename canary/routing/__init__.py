"""Where traffic goes: the router interface the release drives.

A router applies and reads one routing state of one traffic API; the planner
(`canary.planner`) decides what that state is, and `canary.routing.factory` picks the
router a plan needs. Callers hold only the `Router` interface.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from canary.errors import CanaryError
from canary.planner import Routing

__all__ = ["Router", "Routing", "RoutingMismatch"]


class RoutingMismatch(CanaryError):
    """What the cluster holds after writing is not what was written."""


@runtime_checkable
class Router(Protocol):
    def get_routes(self) -> Routing | None:
        """The routing the cluster holds now; None when none of it exists."""
        ...

    def set_routes(self, routing: Routing) -> None:
        """Make the cluster hold `routing`, make-before-break; no write when it already does.

        At no moment may a route name a destination that does not exist. Raises
        RoutingMismatch when the state read back afterwards differs.
        """
        ...

    def verify(self, routing: Routing) -> None:
        """Read the routing back; raise RoutingMismatch unless the cluster holds `routing`."""
        ...
