"""The router a plan's traffic API needs; callers hold only the `Router` interface."""

from __future__ import annotations

from kubernetes.client import ApiClient

from canary.plan import ReleasePlan
from canary.plan.model import GATEWAY_API
from canary.routing import Router
from canary.routing.gateway_api import GatewayApiRouter
from canary.routing.istio import IstioRouter


def router_for(plan: ReleasePlan, api: ApiClient) -> Router:
    """The plan's router: `routing.provider` istio (VirtualService and DestinationRule) or
    gateway-api (HTTPRoute and per-version Services)."""
    if plan.routing.provider == GATEWAY_API:
        return GatewayApiRouter(api, plan)
    return IstioRouter(api, plan.namespace, plan.virtual_service, plan.destination_rule)
