"""The router a plan's traffic API needs; callers hold only the `Router` interface."""

from __future__ import annotations

from kubernetes.client import ApiClient

from canary.plan import ReleasePlan
from canary.routing import Router
from canary.routing.istio import IstioRouter


def router_for(plan: ReleasePlan, api: ApiClient) -> Router:
    """The router of the plan's service: VirtualService and DestinationRule."""
    return IstioRouter(api, plan.namespace, plan.virtual_service, plan.destination_rule)
