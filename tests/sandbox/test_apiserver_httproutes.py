"""The emulated API server's Gateway API HTTPRoutes, driven through the official client."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client import ApiException
from kubernetes.dynamic import DynamicClient

from tests.support.gateway_api_crd import CRD_FILE, bookinfo_objects
from tests.support.waiting import wait_until

GROUP = "gateway.networking.k8s.io"
PLURAL = "httproutes"


def http_route(name: str, *rules: dict[str, Any], version: str = "v1") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{version}",
        "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": "reviews", "port": 9080}],
            "rules": list(rules),
        },
    }


def to(*backends: tuple[str, int]) -> dict[str, Any]:
    return {"backendRefs": [{"name": n, "port": 9080, "weight": w} for n, w in backends]}


def create(api: client.ApiClient, ns: str, obj: dict[str, Any]) -> dict[str, Any]:
    version = obj["apiVersion"].split("/")[1]
    return client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, version, ns, PLURAL, obj
    )


def refused(api: client.ApiClient, ns: str, obj: dict[str, Any]) -> ApiException:
    with pytest.raises(ApiException) as caught:
        create(api, ns, obj)
    return caught.value


def causes(exc: ApiException) -> list[tuple[str, str]]:
    details = json.loads(exc.body)["details"]
    return [(c["field"], c["reason"]) for c in details["causes"]]


def test_discovery_lists_httproutes_at_both_versions(k8s):
    groups = {g.name: g for g in client.ApisApi(k8s).get_api_versions().groups}
    gateway = groups[GROUP]
    assert [v.version for v in gateway.versions] == ["v1", "v1beta1"]
    assert gateway.preferred_version.version == "v1"
    for version in ("v1", "v1beta1"):
        listed = client.CustomObjectsApi(k8s).get_api_resources(GROUP, version)
        main = next(r for r in listed.resources if r.name == PLURAL)
        assert (main.kind, main.namespaced, main.singular_name) == ("HTTPRoute", True, "httproute")
        assert {"create", "delete", "get", "list", "patch", "update", "watch"} <= set(main.verbs)
        assert "httproutes/status" in {r.name for r in listed.resources}


def test_the_dynamic_client_finds_and_writes_httproutes(k8s, namespace):
    routes = DynamicClient(k8s).resources.get(api_version=f"{GROUP}/v1", kind="HTTPRoute")
    assert routes.namespaced and routes.name == PLURAL
    routes.create(body=http_route("reviews", to(("reviews-v1", 1))), namespace=namespace)
    got = routes.get(name="reviews", namespace=namespace)
    assert got.spec.rules[0].backendRefs[0].name == "reviews-v1"


def test_istios_samples_are_accepted_and_defaulted(k8s, namespace):
    for filename in ("route-reviews-v1.yaml", "route-reviews-90-10.yaml"):
        sample = next(o for o in bookinfo_objects(filename) if o["kind"] == "HTTPRoute")
        api = client.CustomObjectsApi(k8s)
        api.delete_collection_namespaced_custom_object(GROUP, "v1beta1", namespace, PLURAL)
        stored = create(k8s, namespace, sample)
        rule = stored["spec"]["rules"][0]
        assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
        assert all(b["group"] == "" and b["kind"] == "Service" for b in rule["backendRefs"])
        assert stored["spec"]["parentRefs"][0]["group"] == GROUP  # the CRD's default
    weights = [b["weight"] for b in stored["spec"]["rules"][0]["backendRefs"]]
    assert weights == [90, 10]


def test_a_backend_weight_defaults_to_1(k8s, namespace):
    route = http_route("reviews", {"backendRefs": [{"name": "reviews-v1", "port": 9080}]})
    stored = create(k8s, namespace, route)
    assert stored["spec"]["rules"][0]["backendRefs"][0]["weight"] == 1


@pytest.mark.parametrize(
    ("rule", "field", "reason"),
    [
        (to(("reviews-v1", 1000001)), "spec.rules[0].backendRefs[0].weight", "FieldValueInvalid"),
        (to(("reviews-v1", -1)), "spec.rules[0].backendRefs[0].weight", "FieldValueInvalid"),
        (
            to(*[(f"b{i}", 1) for i in range(17)]),
            "spec.rules[0].backendRefs",
            "FieldValueTooMany",
        ),
        (
            {"matches": [{"path": {"type": "Prefix", "value": "/"}}], **to(("a", 1))},
            "spec.rules[0].matches[0].path.type",
            "FieldValueNotSupported",
        ),
        (
            {"matches": [{"path": {"type": "PathPrefix", "value": "a//b"}}], **to(("a", 1))},
            "spec.rules[0].matches[0].path",
            "FieldValueInvalid",
        ),
        (
            {"matches": [{"headers": [{"name": "end-user", "type": "Prefix", "value": "j"}]}]},
            "spec.rules[0].matches[0].headers[0].type",
            "FieldValueNotSupported",
        ),
        (
            {"matches": [{"headers": [{"name": "end-user"}]}]},
            "spec.rules[0].matches[0].headers[0].value",
            "FieldValueRequired",
        ),
        (
            {"backendRefs": [{"name": "reviews-v1"}]},
            "spec.rules[0].backendRefs[0]",
            "FieldValueInvalid",
        ),
        (
            {"backendRefs": [{"name": "reviews-v1", "port": 9080, "subset": "v1"}]},
            "spec.rules[0].backendRefs[0].subset",
            "FieldValueForbidden",
        ),
    ],
)
def test_invalid_routes_are_refused_with_422_naming_the_field(k8s, namespace, rule, field, reason):
    exc = refused(k8s, namespace, http_route("bad", rule))
    assert exc.status == 422
    assert (field, reason) in causes(exc)
    assert (
        client.CustomObjectsApi(k8s).list_namespaced_custom_object(GROUP, "v1", namespace, PLURAL)[
            "items"
        ]
        == []
    )


def test_both_versions_are_views_of_one_object(k8s, namespace):
    api = client.CustomObjectsApi(k8s)
    create(k8s, namespace, http_route("reviews", to(("reviews-v1", 1)), version="v1beta1"))
    v1 = api.get_namespaced_custom_object(GROUP, "v1", namespace, PLURAL, "reviews")
    beta = api.get_namespaced_custom_object(GROUP, "v1beta1", namespace, PLURAL, "reviews")
    assert (v1["apiVersion"], beta["apiVersion"]) == (f"{GROUP}/v1", f"{GROUP}/v1beta1")
    assert v1["spec"] == beta["spec"]
    assert v1["metadata"]["resourceVersion"] == beta["metadata"]["resourceVersion"]


def test_update_patch_and_delete(k8s, namespace):
    api = client.CustomObjectsApi(k8s)
    created = create(k8s, namespace, http_route("reviews", to(("reviews-v1", 1))))
    created["spec"]["rules"] = [to(("reviews-v1", 90), ("reviews-v2", 10))]
    replaced = api.replace_namespaced_custom_object(
        GROUP, "v1", namespace, PLURAL, "reviews", created
    )
    assert [b["weight"] for b in replaced["spec"]["rules"][0]["backendRefs"]] == [90, 10]
    assert replaced["metadata"]["generation"] == 2

    with pytest.raises(ApiException) as conflict:  # `created` holds the old resourceVersion
        api.replace_namespaced_custom_object(GROUP, "v1", namespace, PLURAL, "reviews", created)
    assert conflict.value.status == 409

    patched = api.patch_namespaced_custom_object(
        GROUP, "v1", namespace, PLURAL, "reviews", {"metadata": {"annotations": {"a": "b"}}}
    )
    assert patched["metadata"]["annotations"] == {"a": "b"}
    with pytest.raises(ApiException) as bad_patch:
        api.patch_namespaced_custom_object(
            GROUP, "v1", namespace, PLURAL, "reviews", {"spec": {"rules": [to(("a", 2000000))]}}
        )
    assert bad_patch.value.status == 422

    api.delete_namespaced_custom_object(GROUP, "v1", namespace, PLURAL, "reviews")
    with pytest.raises(ApiException) as gone:
        api.get_namespaced_custom_object(GROUP, "v1", namespace, PLURAL, "reviews")
    assert gone.value.status == 404


def test_watch_delivers_added_modified_deleted(k8s, namespace):
    api = client.CustomObjectsApi(k8s)
    start = api.list_namespaced_custom_object(GROUP, "v1", namespace, PLURAL)["metadata"][
        "resourceVersion"
    ]
    events: list[tuple[str, str]] = []
    w = watch.Watch()

    def consume() -> None:
        for event in w.stream(
            api.list_namespaced_custom_object,
            GROUP,
            "v1beta1",
            namespace,
            PLURAL,
            resource_version=start,
            timeout_seconds=10,
        ):
            events.append((event["type"], event["object"]["apiVersion"]))
            if event["type"] == "DELETED":
                w.stop()

    reader = threading.Thread(target=consume)
    reader.start()
    create(k8s, namespace, http_route("reviews", to(("reviews-v1", 1))))
    api.patch_namespaced_custom_object(
        GROUP, "v1", namespace, PLURAL, "reviews", {"metadata": {"labels": {"x": "y"}}}
    )
    api.delete_namespaced_custom_object(GROUP, "v1", namespace, PLURAL, "reviews")
    reader.join(timeout=15)
    assert not reader.is_alive()
    assert events == [(t, f"{GROUP}/v1beta1") for t in ("ADDED", "MODIFIED", "DELETED")]


def test_the_mesh_routes_by_a_served_httproute(make_sandbox):
    box, api = make_sandbox(seed=3, rps=1)
    assert box.wait_ready(10)
    core = client.CoreV1Api(api)
    for version in ("v1", "v2"):
        core.create_namespaced_service(
            "default",
            {
                "metadata": {"name": f"reviews-{version}"},
                "spec": {
                    "selector": {"app": "reviews", "version": version},
                    "ports": [{"port": 9080}],
                },
            },
        )
    # reviews-v2 is not deployed: what the route sends there finds no healthy upstream.
    create(api, "default", http_route("reviews", to(("reviews-v2", 1))))

    def outcomes() -> dict[str, float]:
        box.simulator.send(200)
        return box.simulator.split(0.2, "reviews")

    wait_until(lambda: outcomes() == {"503": 1.0}, 10, message="all on the missing v2")
    routes = client.CustomObjectsApi(api)
    current = routes.get_namespaced_custom_object(GROUP, "v1", "default", PLURAL, "reviews")
    current["spec"]["rules"] = [to(("reviews-v1", 3), ("reviews-v2", 0))]
    routes.replace_namespaced_custom_object(GROUP, "v1", "default", PLURAL, "reviews", current)
    wait_until(lambda: outcomes() == {"reviews-v1": 1.0}, 10, message="all on v1")


def test_a_published_crd_can_replace_the_builtin_schema(make_sandbox):
    box, api = make_sandbox(preload=False, gateway_api_crd=str(CRD_FILE))
    assert box.api.gateway_api.source.endswith("httproute-crd.yaml")
    stored = create(
        api, "default", http_route("reviews", {"backendRefs": [{"name": "a", "port": 1}]})
    )
    assert stored["spec"]["rules"][0]["backendRefs"][0]["weight"] == 1
    exc = refused(api, "default", http_route("bad", to(("a", 1000001))))
    assert exc.status == 422
