"""Cluster: Services over the official client against the sandbox's API server, and the
mark that says which release created one."""

from __future__ import annotations

from typing import Any

from canary.cluster import Cluster, api_client, created_by
from canary.planner import phase_named, routing_for


def cluster_of(box: Any) -> Cluster:
    return Cluster(api_client(box.kubeconfig), "default")


def version_services(fast_plan: Any, release_id: str) -> list[dict[str, Any]]:
    plan = fast_plan(routing={"provider": "gateway-api", "port": 9080})
    return list(routing_for(plan, phase_named(plan, "isolate"), release_id).documents()["services"])


def service_writes(box: Any) -> list[tuple[str, int]]:
    return [(w.method, w.status) for w in box.writes() if "/services" in w.path]


def test_a_missing_service_is_created_with_the_releases_mark(start_sandbox, fast_plan):
    box = start_sandbox()
    stable, _ = version_services(fast_plan, "r1")

    created, wrote = cluster_of(box).create_service(stable)

    assert wrote and created_by(created) == "r1"
    stored = box.get("services", "reviews-v1")
    assert stored["spec"]["selector"] == {"app": "reviews", "version": "v1"}
    assert created_by(stored) == "r1"


def test_an_existing_service_is_used_as_it_is(start_sandbox, fast_plan):
    box = start_sandbox()
    stable, _ = version_services(fast_plan, "r1")
    theirs = {**stable, "metadata": {"name": "reviews-v1"}, "spec": {**stable["spec"]}}
    theirs["spec"]["ports"] = [{"name": "http", "port": 9080, "targetPort": 8080}]
    cluster_of(box).create_service(theirs)
    box.api.clear_requests()

    found, wrote = cluster_of(box).create_service(stable)

    assert not wrote and service_writes(box) == []
    assert created_by(found) is None and found["spec"]["ports"][0]["targetPort"] == 8080


def test_only_the_release_that_created_a_service_deletes_it(start_sandbox, fast_plan):
    box = start_sandbox()
    cluster = cluster_of(box)
    stable, canary = version_services(fast_plan, "r1")
    cluster.create_service(stable)
    cluster.create_service({**canary, "metadata": {"name": "reviews-v2"}})  # not the release's
    box.api.clear_requests()

    assert cluster.delete_service("reviews-v1", owner="another") is False
    assert cluster.delete_service("reviews-v2", owner="r1") is False
    assert cluster.delete_service("reviews-v3", owner="r1") is False
    assert service_writes(box) == []

    assert cluster.delete_service("reviews-v1", owner="r1") is True
    assert box.get("services", "reviews-v1") is None
    assert box.get("services", "reviews-v2") is not None


class StaleRead(Cluster):
    """Reads the Service as it was before someone deleted and made it anew, once."""

    stale: dict[str, Any] | None = None

    def _read_service(self, name: str) -> dict[str, Any] | None:
        if self.stale is not None:
            stale, self.stale = self.stale, None
            return stale
        return super()._read_service(name)


def test_a_service_made_anew_since_it_was_read_is_not_deleted(start_sandbox, fast_plan):
    box = start_sandbox()
    stable, _ = version_services(fast_plan, "r1")
    plain = cluster_of(box)
    old, _ = plain.create_service(stable)
    assert plain.delete_service("reviews-v1", owner="r1")
    plain.create_service({**stable, "metadata": {"name": "reviews-v1"}})  # someone's own
    box.api.clear_requests()
    cluster = StaleRead(api_client(box.kubeconfig), "default")
    cluster.stale = old

    assert cluster.delete_service("reviews-v1", owner="r1") is False

    assert service_writes(box) == [("DELETE", 409)]  # the uid precondition refused it
    assert created_by(box.get("services", "reviews-v1")) is None
