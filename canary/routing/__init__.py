"""Where traffic goes: the router interface the release drives.

Like Flagger's routers, a router applies and reads one routing state; the planner
(`canary.planner`) decides what that state is. A router must apply a state so that no
route ever names a destination that does not exist yet, and must verify what it wrote.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from canary.planner import Routing

__all__ = ["Router", "Routing", "RoutingMismatch"]


class RoutingMismatch(Exception):
    """What the cluster holds after writing is not what was written."""


@runtime_checkable
class Router(Protocol):
    def set_routes(self, routing: Routing) -> None:
        """Make the cluster hold `routing`; no write when it already does.

        Raises RoutingMismatch when the state read back afterwards differs.
        """
        ...

    def get_routes(self) -> Routing | None:
        """The routing the cluster holds now; None when none of it exists."""
        ...
