"""What the mesh reads of the cluster: the one interface between the mesh and an API server.

The router, the traffic simulator and the ingress read Deployments, Services,
VirtualServices, DestinationRules and HTTPRoutes through a ``ClusterView`` and nothing
else, so the same code routes in both of the sandbox's modes:

* the emulated cluster (``canary sandbox``, ``canary demo``): the emulated API server's own
  object store, ``sandbox.kube.store.ObjectStore``, read in process;
* the mesh against any API server (``canary sandbox --cluster KUBECONFIG``): a watch cache,
  ``sandbox.mesh.watch_cache.WatchCache``, fed by list and watch over the official
  ``kubernetes`` client.

Objects are the API's JSON as plain dicts. Resources are named by their plural
(``deployments``, ``services``, ``virtualservices``, ``destinationrules``, ``httproutes``);
a resource the view does not hold lists as empty.
"""

from __future__ import annotations

from typing import Protocol

RESOURCES = ("deployments", "services", "virtualservices", "destinationrules", "httproutes")


class ClusterView(Protocol):
    def revision(self) -> int:
        """A number that changes whenever any object the view holds changes.

        Readers rebuild what they derive from the objects only when it moved.
        """
        ...

    def list(self, resource: str, namespace: str | None = None) -> list[dict]:
        """The objects of one resource (in one namespace, or all), sorted by namespace and
        name; the caller may change them.

        A view may also offer ``snapshot(resource) -> (objects, revision)``: the same
        objects shared read-only, which spares the copies (both implementations do).
        """
        ...
