"""The emulated API server, driven through the official Kubernetes client over HTTP."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from kubernetes import client, watch
from kubernetes.client import ApiException
from kubernetes.dynamic import DynamicClient

from sandbox import bookinfo
from sandbox.emulated import Sandbox
from tests.sandbox.conftest import REFERENCE
from tests.support.waiting import wait_until

ISTIO = "networking.istio.io"
T = TypeVar("T")


def wait_for(check: Callable[[], T], timeout: float = 30.0, what: str = "condition") -> T:
    return wait_until(check, timeout, interval=0.02, message=what)


def vs(name: str, *routes: dict[str, Any], version: str = "v1") -> dict[str, Any]:
    return {
        "apiVersion": f"{ISTIO}/{version}",
        "kind": "VirtualService",
        "metadata": {"name": name},
        "spec": {"hosts": [name], "http": [{"route": list(routes)}]},
    }


def dest(subset: str, weight: Any = None, host: str = "reviews") -> dict[str, Any]:
    out: dict[str, Any] = {"destination": {"host": host, "subset": subset}}
    if weight is not None:
        out["weight"] = weight
    return out


def status_of(exc: ApiException) -> dict[str, Any]:
    return json.loads(exc.body)


def create_istio(k8s: client.ApiClient, ns: str, obj: dict[str, Any]) -> dict[str, Any]:
    version = obj["apiVersion"].split("/")[1]
    plural = obj["kind"].lower() + "s"
    return client.CustomObjectsApi(k8s).create_namespaced_custom_object(
        ISTIO, version, ns, plural, obj
    )


def deployment(
    name: str, version: str = "v1", replicas: int = 1, app: str = "demo"
) -> dict[str, Any]:
    obj = bookinfo.deployment(app, "ignored", version, replicas)
    obj["metadata"] = {"name": name, "labels": {"app": app, "version": version}}
    return obj


# ------------------------------------------------------------------ objects
BOOKINFO_FILES = sorted(p.name for p in (REFERENCE / "bookinfo").glob("*.yaml"))


@pytest.mark.parametrize("filename", BOOKINFO_FILES)
def test_every_reference_bookinfo_object_is_accepted(k8s, namespace, filename):
    apps, core = client.AppsV1Api(k8s), client.CoreV1Api(k8s)
    docs = [d for d in yaml.safe_load_all((REFERENCE / "bookinfo" / filename).read_text()) if d]
    assert docs
    for doc in docs:
        kind = doc["kind"]
        if kind == "Deployment":
            made = apps.create_namespaced_deployment(namespace, doc).to_dict()
        elif kind == "Service":
            made = core.create_namespaced_service(namespace, doc).to_dict()
        elif kind == "ServiceAccount":
            made = core.create_namespaced_service_account(namespace, doc).to_dict()
        else:
            made = create_istio(k8s, namespace, doc)
        assert made["metadata"]["name"] == doc["metadata"]["name"]
        assert made["metadata"]["namespace"] == namespace


@pytest.mark.parametrize(
    ("route", "field", "words"),
    [
        (dest("v1", "80"), "spec.http[0].route[0].weight", "must be of type integer"),
        (dest("v1") | {"foo": 1}, "spec.http[0].route[0].foo", "field not declared in schema"),
        (
            {"destination": {"subset": "v1"}},
            "spec.http[0].route[0].destination.host",
            "Required value",
        ),
    ],
)
def test_invalid_virtual_service_is_refused_with_422(k8s, namespace, route, field, words):
    with pytest.raises(ApiException) as caught:
        create_istio(k8s, namespace, vs("reviews", route))
    assert caught.value.status == 422
    body = status_of(caught.value)
    assert body["kind"] == "Status" and body["reason"] == "Invalid" and body["code"] == 422
    assert f"{field}: " in body["message"] and words in body["message"]
    assert body["message"].startswith(f'VirtualService.{ISTIO} "reviews" is invalid: ')
    assert [c["field"] for c in body["details"]["causes"]] == [field]


def test_string_weight_message_reads_like_the_api_server(k8s, namespace):
    with pytest.raises(ApiException) as caught:
        create_istio(k8s, namespace, vs("reviews", dest("v1", "string")))
    assert (
        'spec.http[0].route[0].weight: Invalid value: "string": '
        "spec.http[0].route[0].weight in body must be of type integer"
    ) in status_of(caught.value)["message"]


def test_invalid_deployment_is_refused_with_422(k8s, namespace):
    apps = client.AppsV1Api(k8s)
    bad = deployment("demo-v1")
    bad["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    bad["spec"]["template"]["spec"]["containers"][0].pop("image")
    with pytest.raises(ApiException) as caught:
        apps.create_namespaced_deployment(namespace, bad)
    assert caught.value.status == 422
    message = status_of(caught.value)["message"]
    assert "spec.template.metadata.labels" in message and "does not match" in message
    assert "spec.template.spec.containers[0].image: Required value" in message


def post_raw(url: str, data: bytes) -> tuple[int, dict[str, Any]]:
    """A POST the typed client would refuse to send (it validates bodies itself)."""
    request = urllib.request.Request(
        url, data=data, method="POST", headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    return caught.value.code, json.loads(caught.value.read())


def test_wrong_json_type_on_a_builtin_is_a_400(sandbox, namespace):
    bad = deployment("demo-v1")
    bad["spec"]["replicas"] = "three"
    code, body = post_raw(
        f"{sandbox.api_url}/apis/apps/v1/namespaces/{namespace}/deployments",
        json.dumps(bad).encode(),
    )
    assert code == 400 and body["reason"] == "BadRequest"
    assert "spec.replicas" in body["message"]


def test_malformed_json_is_a_400(sandbox, namespace):
    code, body = post_raw(
        f"{sandbox.api_url}/apis/{ISTIO}/v1/namespaces/{namespace}/virtualservices", b"{not json"
    )
    assert code == 400
    assert body["kind"] == "Status" and body["reason"] == "BadRequest"


# ------------------------------------------------------------ conflicts, 404
def test_duplicate_create_is_409_already_exists(k8s, namespace):
    create_istio(k8s, namespace, vs("reviews", dest("v1")))
    with pytest.raises(ApiException) as caught:
        create_istio(k8s, namespace, vs("reviews", dest("v2")))
    assert caught.value.status == 409
    body = status_of(caught.value)
    assert body["reason"] == "AlreadyExists"
    assert body["message"] == f'virtualservices.{ISTIO} "reviews" already exists'


def test_stale_replace_is_409_conflict_and_unconditional_replace_is_allowed(k8s, namespace):
    api = client.CustomObjectsApi(k8s)
    first = create_istio(k8s, namespace, vs("reviews", dest("v1")))
    stale = json.loads(json.dumps(first))
    first["spec"]["http"][0]["route"] = [dest("v1", 90), dest("v2", 10)]
    api.replace_namespaced_custom_object(
        ISTIO, "v1", namespace, "virtualservices", "reviews", first
    )
    with pytest.raises(ApiException) as caught:
        api.replace_namespaced_custom_object(
            ISTIO, "v1", namespace, "virtualservices", "reviews", stale
        )
    assert caught.value.status == 409 and status_of(caught.value)["reason"] == "Conflict"
    del stale["metadata"]["resourceVersion"]
    replaced = api.replace_namespaced_custom_object(
        ISTIO, "v1", namespace, "virtualservices", "reviews", stale
    )
    assert replaced["spec"]["http"][0]["route"] == [dest("v1")]


def test_missing_objects_are_404(k8s, namespace):
    for call in (
        lambda: client.AppsV1Api(k8s).read_namespaced_deployment("nope", namespace),
        lambda: client.CoreV1Api(k8s).read_namespaced_service("nope", namespace),
        lambda: client.CustomObjectsApi(k8s).get_namespaced_custom_object(
            ISTIO, "v1beta1", namespace, "destinationrules", "nope"
        ),
        lambda: client.CustomObjectsApi(k8s).delete_namespaced_custom_object(
            ISTIO, "v1", namespace, "virtualservices", "nope"
        ),
    ):
        with pytest.raises(ApiException) as caught:
            call()
        assert caught.value.status == 404
        assert status_of(caught.value)["reason"] == "NotFound"
    with pytest.raises(ApiException) as caught:
        client.AppsV1Api(k8s).read_namespaced_deployment("nope", namespace)
    assert status_of(caught.value)["message"] == 'deployments.apps "nope" not found'


def test_create_in_a_missing_namespace_is_404(k8s):
    with pytest.raises(ApiException) as caught:
        create_istio(k8s, "no-such-namespace", vs("reviews", dest("v1")))
    assert caught.value.status == 404
    assert 'namespaces "no-such-namespace" not found' in status_of(caught.value)["message"]


# ------------------------------------------------------------ API versions
def test_istio_versions_are_views_of_one_object(k8s, namespace):
    api = client.CustomObjectsApi(k8s)
    created = create_istio(k8s, namespace, vs("reviews", dest("v1"), version="v1alpha3"))
    assert created["apiVersion"] == f"{ISTIO}/v1alpha3"
    views = {
        v: api.get_namespaced_custom_object(ISTIO, v, namespace, "virtualservices", "reviews")
        for v in ("v1", "v1beta1", "v1alpha3")
    }
    for version, view in views.items():
        assert view["apiVersion"] == f"{ISTIO}/{version}"
        assert view["metadata"] == created["metadata"]
        assert view["spec"] == created["spec"]
    patched = api.patch_namespaced_custom_object(
        ISTIO,
        "v1beta1",
        namespace,
        "virtualservices",
        "reviews",
        {"spec": {"http": [{"route": [dest("v2")]}]}},
    )
    again = api.get_namespaced_custom_object(ISTIO, "v1", namespace, "virtualservices", "reviews")
    assert again["spec"] == patched["spec"]
    assert again["metadata"]["resourceVersion"] == patched["metadata"]["resourceVersion"]
    listed = api.list_namespaced_custom_object(ISTIO, "v1alpha3", namespace, "virtualservices")
    assert [i["metadata"]["uid"] for i in listed["items"]] == [created["metadata"]["uid"]]
    assert listed["items"][0]["apiVersion"] == f"{ISTIO}/v1alpha3"


def test_body_api_version_must_match_the_url(k8s, namespace):
    with pytest.raises(ApiException) as caught:
        client.CustomObjectsApi(k8s).create_namespaced_custom_object(
            ISTIO, "v1", namespace, "virtualservices", vs("reviews", dest("v1"), version="v1alpha3")
        )
    assert caught.value.status == 400


# ---------------------------------------------------------------- metadata
def test_metadata_uid_generation_and_resource_version(k8s, namespace):
    apps = client.AppsV1Api(k8s)
    made = apps.create_namespaced_deployment(namespace, deployment("demo-v1"))
    meta = made.metadata
    assert meta.generation == 1 and meta.namespace == namespace and len(meta.uid) == 36
    assert meta.creation_timestamp is not None and meta.creation_timestamp.tzinfo is not None
    assert made.spec.replicas == 1 and made.spec.strategy.type == "RollingUpdate"  # defaults

    labelled = apps.patch_namespaced_deployment(
        "demo-v1", namespace, {"metadata": {"labels": {"team": "books"}}}
    )
    assert labelled.metadata.generation == 1  # metadata-only change
    assert int(labelled.metadata.resource_version) > int(meta.resource_version)

    scaled = apps.patch_namespaced_deployment("demo-v1", namespace, {"spec": {"replicas": 2}})
    assert scaled.metadata.generation == 2
    assert scaled.metadata.uid == meta.uid
    assert scaled.metadata.creation_timestamp == meta.creation_timestamp

    # Status written by the controller never bumps the generation; status sent on the main
    # resource is ignored.
    done = wait_for(
        lambda: (
            (d := apps.read_namespaced_deployment("demo-v1", namespace)).status.observed_generation
            == 2
            and d
        ),
        what="observedGeneration 2",
    )
    assert done.metadata.generation == 2
    body = done.to_dict(serialize=True)
    body["status"]["observedGeneration"] = 99
    replaced = apps.replace_namespaced_deployment("demo-v1", namespace, body)
    assert replaced.status.observed_generation == 2 and replaced.metadata.generation == 2


def test_noop_update_keeps_the_resource_version(k8s, namespace):
    api = client.CustomObjectsApi(k8s)
    made = create_istio(k8s, namespace, vs("reviews", dest("v1")))
    same = api.replace_namespaced_custom_object(
        ISTIO, "v1", namespace, "virtualservices", "reviews", made
    )
    assert same["metadata"]["resourceVersion"] == made["metadata"]["resourceVersion"]
    assert same["metadata"]["generation"] == 1


def test_status_subresource_only_writes_status(k8s, namespace):
    api = client.CustomObjectsApi(k8s)
    made = create_istio(k8s, namespace, vs("reviews", dest("v1")))
    body = dict(made, status={"observedGeneration": 1}, spec={"hosts": ["changed"]})
    out = api.replace_namespaced_custom_object_status(
        ISTIO, "v1", namespace, "virtualservices", "reviews", body
    )
    assert out["status"] == {"observedGeneration": 1}
    assert out["spec"] == made["spec"] and out["metadata"]["generation"] == 1


# ------------------------------------------------------------------ patches
def test_merge_patch_and_json_patch_on_custom_objects(k8s, namespace):
    api = client.CustomObjectsApi(k8s)
    create_istio(k8s, namespace, vs("reviews", dest("v1")))
    merged = api.patch_namespaced_custom_object(
        ISTIO,
        "v1",
        namespace,
        "virtualservices",
        "reviews",
        {"metadata": {"labels": {"canary": "reviews-v2"}}, "spec": {"gateways": None}},
    )
    assert merged["metadata"]["labels"] == {"canary": "reviews-v2"}
    ops = [
        {"op": "test", "path": "/spec/http/0/route/0/destination/subset", "value": "v1"},
        {"op": "add", "path": "/spec/http/0/route/0/weight", "value": 90},
        {"op": "add", "path": "/spec/http/0/route/-", "value": dest("v2", 10)},
        {"op": "copy", "from": "/spec/hosts/0", "path": "/spec/hosts/-"},
        {"op": "replace", "path": "/spec/hosts/1", "value": "reviews.default.svc"},
        {"op": "remove", "path": "/metadata/labels/canary"},
    ]
    patched = api.patch_namespaced_custom_object(
        ISTIO,
        "v1",
        namespace,
        "virtualservices",
        "reviews",
        ops,
        _content_type="application/json-patch+json",
    )
    assert patched["spec"]["http"][0]["route"] == [dest("v1", 90), dest("v2", 10)]
    assert patched["spec"]["hosts"] == ["reviews", "reviews.default.svc"]
    assert patched["metadata"].get("labels") == {}
    assert patched["metadata"]["generation"] == 2

    with pytest.raises(ApiException) as caught:  # a failed test op changes nothing
        api.patch_namespaced_custom_object(
            ISTIO,
            "v1",
            namespace,
            "virtualservices",
            "reviews",
            [
                {"op": "test", "path": "/spec/hosts/0", "value": "ratings"},
                {"op": "remove", "path": "/spec/hosts"},
            ],
            _content_type="application/json-patch+json",
        )
    assert caught.value.status == 422
    with pytest.raises(ApiException) as caught:  # a patch producing an invalid object
        api.patch_namespaced_custom_object(
            ISTIO,
            "v1",
            namespace,
            "virtualservices",
            "reviews",
            [{"op": "replace", "path": "/spec/http/0/route/0/weight", "value": "90"}],
            _content_type="application/json-patch+json",
        )
    assert caught.value.status == 422
    unchanged = api.get_namespaced_custom_object(
        ISTIO, "v1", namespace, "virtualservices", "reviews"
    )
    assert unchanged["metadata"]["resourceVersion"] == patched["metadata"]["resourceVersion"]
    with pytest.raises(ApiException) as caught:  # a malformed patch: an unknown operation
        api.patch_namespaced_custom_object(
            ISTIO,
            "v1",
            namespace,
            "virtualservices",
            "reviews",
            [{"op": "jump", "path": "/spec/hosts"}],
            _content_type="application/json-patch+json",
        )
    assert caught.value.status == 400


def test_strategic_merge_patch_merges_containers_by_name(k8s, namespace):
    apps = client.AppsV1Api(k8s)
    apps.create_namespaced_deployment(namespace, deployment("demo-v1"))
    # A dict body makes the client send application/strategic-merge-patch+json.
    patched = apps.patch_namespaced_deployment(
        "demo-v1",
        namespace,
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": "demo", "image": "example/demo:2"}]}}
            }
        },
    )
    container = patched.spec.template.spec.containers[0]
    assert container.image == "example/demo:2"
    assert container.ports[0].container_port == bookinfo.PORT  # kept: merged by name
    # A list body is a JSON patch.
    scaled = apps.patch_namespaced_deployment(
        "demo-v1", namespace, [{"op": "replace", "path": "/spec/replicas", "value": 0}]
    )
    assert scaled.spec.replicas == 0


def test_strategic_merge_patch_is_refused_on_custom_objects(sandbox, namespace, k8s):
    create_istio(k8s, namespace, vs("reviews", dest("v1")))
    url = f"{sandbox.api_url}/apis/{ISTIO}/v1/namespaces/{namespace}/virtualservices/reviews"
    request = urllib.request.Request(
        url,
        data=b'{"spec":{}}',
        method="PATCH",
        headers={"Content-Type": "application/strategic-merge-patch+json"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    caught.value.close()  # the error holds the answer's connection
    assert caught.value.code == 415


def test_scale_subresource(k8s, namespace):
    apps = client.AppsV1Api(k8s)
    apps.create_namespaced_deployment(namespace, deployment("demo-v1", replicas=2))
    scale = apps.read_namespaced_deployment_scale("demo-v1", namespace)
    assert scale.spec.replicas == 2 and scale.status.selector == "app=demo,version=v1"
    apps.patch_namespaced_deployment_scale("demo-v1", namespace, {"spec": {"replicas": 3}})
    assert apps.read_namespaced_deployment("demo-v1", namespace).spec.replicas == 3


def test_dry_run_writes_nothing(k8s, namespace):
    api = client.CustomObjectsApi(k8s)
    out = api.create_namespaced_custom_object(
        ISTIO, "v1", namespace, "virtualservices", vs("reviews", dest("v1")), dry_run="All"
    )
    assert out["metadata"]["name"] == "reviews"
    assert (
        api.list_namespaced_custom_object(ISTIO, "v1", namespace, "virtualservices")["items"] == []
    )


# ----------------------------------------------------------- list, selectors
def test_label_and_field_selectors(k8s, namespace):
    apps, core = client.AppsV1Api(k8s), client.CoreV1Api(k8s)
    for version in ("v1", "v2"):
        apps.create_namespaced_deployment(namespace, deployment(f"demo-{version}", version))

    def names(**kw: str) -> set[str]:
        return {d.metadata.name for d in apps.list_namespaced_deployment(namespace, **kw).items}

    assert names() == {"demo-v1", "demo-v2"}
    assert names(label_selector="app=demo,version=v2") == {"demo-v2"}
    assert names(label_selector="version!=v2") == {"demo-v1"}
    assert names(label_selector="version in (v1, v3)") == {"demo-v1"}
    assert names(label_selector="version notin (v1)") == {"demo-v2"}
    assert names(label_selector="app,!team") == {"demo-v1", "demo-v2"}
    assert names(label_selector="team") == set()
    assert names(field_selector="metadata.name=demo-v1") == {"demo-v1"}
    pods = wait_for(
        lambda: core.list_namespaced_pod(namespace, label_selector="app=demo,version=v2").items,
        what="a v2 pod",
    )
    assert {p.metadata.labels["version"] for p in pods} == {"v2"}
    with pytest.raises(ApiException) as caught:
        apps.list_namespaced_deployment(namespace, label_selector="version in (v1")
    assert caught.value.status == 400


def test_list_across_namespaces_and_bookinfo_preload(k8s):
    apps, core = client.AppsV1Api(k8s), client.CoreV1Api(k8s)
    preloaded = {d.metadata.name for d in apps.list_namespaced_deployment("default").items}
    assert preloaded == {"details-v1", "ratings-v1", "reviews-v1", "productpage-v1"}
    services = core.list_namespaced_service("default").items
    assert {s.metadata.name: (s.spec.ports[0].port, s.spec.selector) for s in services} == {
        n: (9080, {"app": n}) for n in ("details", "ratings", "reviews", "productpage")
    }
    everywhere = apps.list_deployment_for_all_namespaces()
    assert preloaded <= {d.metadata.name for d in everywhere.items}
    assert (
        client.CustomObjectsApi(k8s).list_namespaced_custom_object(
            ISTIO, "v1", "default", "virtualservices"
        )["items"]
        == []
    )


# -------------------------------------------------------------------- watch
def test_watch_delivers_added_modified_deleted(k8s, namespace):
    api = client.CustomObjectsApi(k8s)
    start_rv = api.list_namespaced_custom_object(ISTIO, "v1", namespace, "virtualservices")[
        "metadata"
    ]["resourceVersion"]
    events: list[tuple[str, str, str]] = []
    w = watch.Watch()

    def consume() -> None:
        for event in w.stream(
            api.list_namespaced_custom_object,
            ISTIO,
            "v1beta1",
            namespace,
            "virtualservices",
            resource_version=start_rv,
            timeout_seconds=5,
        ):
            obj = event["object"]
            events.append((event["type"], obj["metadata"]["name"], obj["apiVersion"]))
            if event["type"] == "DELETED":
                w.stop()

    reader = threading.Thread(target=consume)
    reader.start()
    create_istio(k8s, namespace, vs("reviews", dest("v1")))
    api.patch_namespaced_custom_object(
        ISTIO,
        "v1",
        namespace,
        "virtualservices",
        "reviews",
        {"spec": {"hosts": ["reviews", "reviews.x"]}},
    )
    api.delete_namespaced_custom_object(ISTIO, "v1", namespace, "virtualservices", "reviews")
    reader.join(timeout=10)
    assert not reader.is_alive()
    assert events == [(t, "reviews", f"{ISTIO}/v1beta1") for t in ("ADDED", "MODIFIED", "DELETED")]


def test_watch_without_resource_version_starts_with_current_objects(k8s, namespace):
    apps = client.AppsV1Api(k8s)
    apps.create_namespaced_deployment(namespace, deployment("demo-v1"))
    first = next(
        iter(watch.Watch().stream(apps.list_namespaced_deployment, namespace, timeout_seconds=2))
    )
    assert first["type"] == "ADDED" and first["object"].metadata.name == "demo-v1"


def test_watch_timeout_ends_the_stream(k8s, namespace):
    began = time.monotonic()
    seen = list(
        watch.Watch().stream(
            client.CoreV1Api(k8s).list_namespaced_service, namespace, timeout_seconds=1
        )
    )
    # It ends by itself (a stream that did not would hang here), and not early.
    assert seen == [] and time.monotonic() - began >= 0.9


# -------------------------------------------------------- pods and readiness
def test_pods_follow_the_deployment(k8s, namespace):
    apps, core = client.AppsV1Api(k8s), client.CoreV1Api(k8s)
    apps.create_namespaced_deployment(namespace, deployment("demo-v1", replicas=3))

    def pods() -> list[client.V1Pod]:
        return core.list_namespaced_pod(namespace, label_selector="app=demo").items

    made = wait_for(lambda: len(pods()) == 3 and pods(), what="3 pods")
    for pod in made:
        assert pod.metadata.labels["version"] == "v1"
        assert pod.metadata.name.startswith("demo-v1-")
        assert pod.metadata.owner_references[0].kind == "ReplicaSet"
    ready = wait_for(lambda: all(_pod_ready(p) for p in pods()) and pods(), what="ready pods")
    assert {p.status.phase for p in ready} == {"Running"}
    apps.patch_namespaced_deployment_scale("demo-v1", namespace, {"spec": {"replicas": 0}})
    wait_for(lambda: pods() == [], what="pods gone after scale to 0")
    dep = wait_for(
        lambda: (
            (
                d := apps.read_namespaced_deployment_status("demo-v1", namespace)
            ).status.observed_generation
            == d.metadata.generation
            and d
        )
    )
    assert not dep.status.replicas and not dep.status.ready_replicas
    assert apps.delete_namespaced_deployment("demo-v1", namespace)["status"] == "Success"


def _pod_ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def _conditions(dep: client.V1Deployment) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in dep.status.conditions or []}


def test_readiness_appears_after_the_startup_delay(make_sandbox):
    _box, api = make_sandbox("healthy", preload=False, startup_delay_s=0.6)
    apps = client.AppsV1Api(api)
    began = time.monotonic()
    apps.create_namespaced_deployment("default", deployment("demo-v2", "v2", replicas=2))
    # Every status the controller writes, in order: a watch loses none of them, however
    # slowly this test runs.
    statuses: list[client.V1DeploymentStatus] = []
    for event in watch.Watch().stream(
        apps.list_namespaced_deployment,
        "default",
        field_selector="metadata.name=demo-v2",
        timeout_seconds=60,
    ):
        statuses.append(event["object"].status)
        if event["object"].status.ready_replicas == 2:
            break
    ready_after = time.monotonic() - began
    progressing = next(s for s in statuses if s.updated_replicas == 2)
    assert not progressing.ready_replicas  # the pods exist, but readiness waits for the delay
    conditions = {c.type: (c.status, c.reason) for c in progressing.conditions or []}
    assert conditions["Available"] == ("False", "MinimumReplicasUnavailable")
    assert conditions["Progressing"] == ("True", "ReplicaSetUpdated")
    assert ready_after >= 0.6  # never sooner than the delay
    done = apps.read_namespaced_deployment("demo-v2", "default")
    assert done.status.available_replicas == 2 and done.status.observed_generation == 1
    assert _conditions(done) == {
        "Available": ("True", "MinimumReplicasAvailable"),
        "Progressing": ("True", "NewReplicaSetAvailable"),
    }


def test_never_ready_version_stays_unready(make_sandbox):
    _box, api = make_sandbox("unready", preload=False, startup_delay_s=0.1)
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    apps.create_namespaced_deployment("default", deployment("demo-v2", "v2"))
    apps.create_namespaced_deployment("default", deployment("demo-v1", "v1"))
    # v1 was created after v2 with the same delay: once v1 is ready, v2 would be too.
    wait_for(
        lambda: apps.read_namespaced_deployment("demo-v1", "default").status.ready_replicas == 1,
        what="v1 ready",
    )
    v2 = apps.read_namespaced_deployment("demo-v2", "default")
    assert not v2.status.ready_replicas and v2.status.unavailable_replicas == 1
    assert _conditions(v2)["Available"] == ("False", "MinimumReplicasUnavailable")
    pod = core.list_namespaced_pod("default", label_selector="version=v2").items[0]
    assert not _pod_ready(pod)
    assert pod.status.container_statuses[0].state.waiting.reason == "CrashLoopBackOff"


def test_template_change_rolls_and_keeps_old_pods_until_new_are_ready(make_sandbox):
    _box, api = make_sandbox("healthy", preload=False, startup_delay_s=0.3)
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    apps.create_namespaced_deployment("default", deployment("demo-v1"))
    wait_for(
        lambda: apps.read_namespaced_deployment("demo-v1", "default").status.ready_replicas == 1
    )
    patched = apps.patch_namespaced_deployment(
        "demo-v1",
        "default",
        {"spec": {"template": {"metadata": {"annotations": {"restartedAt": "now"}}}}},
    )
    # Every status the controller writes, from the patch on: the rollout's middle state
    # lasts only the start-up delay, which a poll on a busy machine could miss.
    statuses = watch.Watch().stream(
        apps.list_namespaced_deployment,
        "default",
        field_selector="metadata.name=demo-v1",
        resource_version=patched.metadata.resource_version,
        timeout_seconds=30,
    )
    rolling = next(
        event["object"]
        for event in statuses
        if (event["object"].status.observed_generation or 0) >= 2
        and event["object"].status.replicas == 2
    )
    assert rolling.status.ready_replicas == 1  # the old pod serves until the new one is ready
    assert rolling.metadata.annotations["deployment.kubernetes.io/revision"] == "2"
    wait_for(
        lambda: (
            len(core.list_namespaced_pod("default").items) == 1
            and apps.read_namespaced_deployment("demo-v1", "default").status.ready_replicas == 1
        ),
        what="old pod replaced",
    )


# ------------------------------------------------------------- observability
def test_request_log_shows_whether_anything_was_written(sandbox, k8s, namespace):
    sandbox.api.clear_requests()
    client.AppsV1Api(k8s).list_namespaced_deployment(namespace)
    client.CustomObjectsApi(k8s).list_namespaced_custom_object(
        ISTIO, "v1", namespace, "virtualservices"
    )
    assert sandbox.api.writes() == []
    create_istio(k8s, namespace, vs("reviews", dest("v1")))
    writes = sandbox.api.writes()
    assert [(w.method, w.path, w.status) for w in writes] == [
        ("POST", f"/apis/{ISTIO}/v1/namespaces/{namespace}/virtualservices", 201)
    ]
    with urllib.request.urlopen(f"{sandbox.api_url}/debug/requests", timeout=5) as resp:
        logged = json.loads(resp.read())
    assert {"method": "POST", "status": 201}.items() <= next(
        r for r in logged if r["method"] == "POST"
    ).items()


def test_discovery_serves_the_dynamic_client(k8s, namespace):
    dynamic = DynamicClient(k8s)
    for version in ("v1", "v1beta1", "v1alpha3"):
        resource = dynamic.resources.get(api_version=f"{ISTIO}/{version}", kind="DestinationRule")
        assert resource.namespaced and resource.name == "destinationrules"
    rules = dynamic.resources.get(api_version=f"{ISTIO}/v1", kind="DestinationRule")
    rules.create(
        body={
            "apiVersion": f"{ISTIO}/v1",
            "kind": "DestinationRule",
            "metadata": {"name": "reviews"},
            "spec": {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]},
        },
        namespace=namespace,
    )
    got = rules.get(name="reviews", namespace=namespace)
    assert got.spec.subsets[0].name == "v1"
    deployments = dynamic.resources.get(api_version="apps/v1", kind="Deployment")
    assert {d.metadata.name for d in deployments.get(namespace="default").items} >= {"reviews-v1"}
    version = client.VersionApi(k8s).get_code()
    assert version.major == "1"


def test_health_and_kubeconfig(sandbox, tmp_path: Path):
    with urllib.request.urlopen(f"{sandbox.api_url}/healthz", timeout=5) as resp:
        assert resp.read() == b"ok"
    config = yaml.safe_load(sandbox.write_kubeconfig(tmp_path / "kc").read_text())
    assert config["current-context"] == "sandbox"
    assert config["clusters"][0]["cluster"]["server"] == sandbox.api_url
    assert config["users"][0]["user"]["token"]


def test_sandbox_urls(sandbox: Sandbox):
    for url in (sandbox.api_url, sandbox.ingress_url, sandbox.metrics_url):
        assert url.startswith("http://127.0.0.1:")
    assert sandbox.metrics_url.endswith("/metrics")
    with urllib.request.urlopen(
        sandbox.metrics_url.replace("/metrics", "/debug/split?window=5"), timeout=5
    ) as resp:
        assert isinstance(json.loads(resp.read()), dict)


def test_published_crds_can_replace_the_builtin_schema(make_sandbox):
    box, api = make_sandbox(preload=False, istio_crds=str(REFERENCE / "networking-crds.yaml"))
    assert box.api.istio.source.endswith("networking-crds.yaml")
    create_istio(api, "default", vs("reviews", dest("v1", 90), dest("v2", 10)))
    with pytest.raises(ApiException) as caught:
        create_istio(api, "default", vs("ratings", dest("v1", "90"), version="v1beta1"))
    assert caught.value.status == 422
    assert "spec.http[0].route[0].weight" in status_of(caught.value)["message"]


def test_readiness_history_keeps_when_each_workload_turned_ready(make_sandbox):
    box, api = make_sandbox()
    apps = client.AppsV1Api(api)
    url = box.metrics_url.replace("/metrics", "/debug/readiness")

    def history() -> dict[str, list[float]]:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())

    v1 = wait_until(lambda: history().get("default/reviews-v1"), 10, message="reviews-v1 ready")
    assert len(v1) == 1 and v1[0] <= time.monotonic()

    canary = apps.read_namespaced_deployment("reviews-v1", "default").to_dict()
    labels = {**canary["spec"]["template"]["metadata"]["labels"], "version": "v2"}
    created = time.monotonic()
    apps.create_namespaced_deployment(
        "default",
        {
            "metadata": {"name": "reviews-v2", "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "reviews", "image": "r:v2"}]},
                },
            },
        },
    )
    v2 = wait_until(lambda: history().get("default/reviews-v2"), 10, message="reviews-v2 ready")
    # The controller's start-up delay (0.5 s) lies between creating it and its turning ready.
    assert created + 0.4 <= v2[0] <= time.monotonic()
    apps.delete_namespaced_deployment("reviews-v2", "default")
    wait_until(
        lambda: (
            apps.list_namespaced_deployment("default").items
            and all(
                d.metadata.name != "reviews-v2"
                for d in apps.list_namespaced_deployment("default").items
            )
        ),
        10,
        message="reviews-v2 gone",
    )
    assert history()["default/reviews-v2"] == v2, "the history forgot a deleted workload"
