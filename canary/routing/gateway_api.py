"""Gateway API routing: one HTTPRoute (gateway.networking.k8s.io/v1) whose parent is the
Service itself, and one Service per version as its backends.

Writes are make-before-break: first every Service the new state needs (created when
missing, with the release's id as its mark), then the HTTPRoute, and only then are the
Services this release created, and no rule names any more, deleted. At no point does a
rule name a Service that does not exist; a Service the release did not create is never
deleted.
"""

from __future__ import annotations

from kubernetes import client as k8s

from canary.cluster import Cluster, created_by
from canary.plan import ReleasePlan
from canary.planner import HttpRouteRouting, same_routing
from canary.planner.gateway_api import GROUP, backend_names
from canary.routing import RouteObject, RoutingMismatch
from canary.routing.custom_objects import CustomObjectRouter

VERSION = "v1"
HTTP_ROUTES = "httproutes"


class GatewayApiRouter(CustomObjectRouter):
    group = GROUP
    version = VERSION

    def __init__(self, api: k8s.ApiClient, plan: ReleasePlan, *, retry_timeout: float = 30.0):
        super().__init__(api, plan.namespace, retry_timeout=retry_timeout)
        self.http_route = plan.http_route
        self.version_services = (plan.stable_service, plan.canary_service)
        self._cluster = Cluster(api, plan.namespace, retry_timeout=retry_timeout)

    def route_object(self) -> RouteObject:
        return RouteObject(
            GROUP, VERSION, HTTP_ROUTES, "HTTPRoute", self.namespace, self.http_route
        )

    def get_routes(self) -> HttpRouteRouting | None:
        route = self._read(HTTP_ROUTES, self.http_route)
        services = tuple(
            service
            for name in self.version_services
            if (service := self._cluster.get_service(name)) is not None
        )
        if route is None and not services:
            return None
        return HttpRouteRouting(route or {}, services)

    def set_routes(self, routing: HttpRouteRouting) -> None:
        current = self.get_routes()
        if current is not None and not self._differences(current, routing):
            return
        for service in routing.services:
            self._cluster.create_service(service)
        self._apply(HTTP_ROUTES, routing.http_route)
        if routing.release_id is not None:
            in_use = set(backend_names(self._read(HTTP_ROUTES, self.http_route) or {}))
            for name in self._retired(routing):
                if name not in in_use:  # changed meanwhile: verify below says so
                    self._cluster.delete_service(name, owner=routing.release_id)
        self.verify(routing)

    def verify(self, routing: HttpRouteRouting) -> None:
        """Raise RoutingMismatch unless the cluster holds `routing`."""
        differences = self._differences(self.get_routes(), routing)
        if differences:
            raise RoutingMismatch(
                f"{'; '.join(differences)} in namespace {self.namespace} (changed by someone "
                "else, or by an admission webhook)"
            )

    def _retired(self, routing: HttpRouteRouting) -> list[str]:
        """The version Services the state does not need."""
        wanted = set(routing.service_names())
        return [name for name in self.version_services if name not in wanted]

    def _differences(self, actual: HttpRouteRouting | None, desired: HttpRouteRouting) -> list[str]:
        found = {s["metadata"]["name"]: s for s in actual.services} if actual else {}
        out = []
        if actual is None or not same_routing(desired.http_route, actual.http_route):
            out.append(f"HTTPRoute {self.http_route} read back different from what was written")
        out += [
            f"Service {name} is missing" for name in desired.service_names() if name not in found
        ]
        out += [
            f"Service {name}, created by release {desired.release_id} and routed to no more, "
            "is still there"
            for name in self._retired(desired)
            if name in found
            and desired.release_id is not None
            and created_by(found[name]) == desired.release_id
        ]
        return out
