"""The API server's parts on their own: patches, selectors, the store, the controller."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from sandbox import bookinfo
from sandbox.kube.apiserver import ApiServer
from sandbox.kube.controller import ReadinessController, template_hash
from sandbox.kube.patch import BadPatch, PatchError, json_patch, merge_patch, strategic_merge_patch
from sandbox.kube.selectors import (
    SelectorError,
    field_matches,
    matches,
    parse_field_selector,
    parse_label_selector,
)
from sandbox.kube.store import AlreadyExists, Conflict, Gone, NotFound, ObjectStore
from sandbox.kube.validation import parse_duration_ns


# ------------------------------------------------------------------ patches
@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [  # RFC 7386, appendix A
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_rfc7386_examples(target, patch, result):
    assert merge_patch(target, patch) == result


def test_json_patch_operations():
    doc = {"foo": ["bar", "baz"], "a/b": 1, "m~n": 2}
    out = json_patch(
        doc,
        [
            {"op": "add", "path": "/foo/1", "value": "qux"},
            {"op": "remove", "path": "/a~1b"},
            {"op": "replace", "path": "/m~0n", "value": 3},
            {"op": "move", "from": "/foo/0", "path": "/first"},
            {"op": "copy", "from": "/first", "path": "/foo/-"},
            {"op": "test", "path": "/foo", "value": ["qux", "baz", "bar"]},
        ],
    )
    assert out == {"foo": ["qux", "baz", "bar"], "m~n": 3, "first": "bar"}
    assert doc == {"foo": ["bar", "baz"], "a/b": 1, "m~n": 2}  # the input is untouched
    assert json_patch(doc, [{"op": "replace", "path": "", "value": {"x": 1}}]) == {"x": 1}


@pytest.mark.parametrize(
    ("ops", "error"),
    [
        ([{"op": "test", "path": "/a", "value": 2}], PatchError),
        ([{"op": "remove", "path": "/missing"}], PatchError),
        ([{"op": "add", "path": "/list/5", "value": 1}], PatchError),
        ([{"op": "replace", "path": "/nothing", "value": 1}], PatchError),
        ([{"op": "move", "from": "/obj", "path": "/obj/inner"}], PatchError),
        ([{"op": "copy", "from": "/nope", "path": "/b"}], PatchError),
        ([{"op": "add", "path": "/a/b", "value": 1}], PatchError),
        ([{"op": "jump", "path": "/a"}], BadPatch),
        ([{"op": "add", "path": "a", "value": 1}], BadPatch),
        ([{"op": "move", "from": "a", "path": "/b"}], BadPatch),
        ([{"op": "add", "path": "/b"}], BadPatch),
        ([{"path": "/b"}], BadPatch),
        (["add"], BadPatch),
        ({"op": "add"}, BadPatch),
    ],
)
def test_json_patch_errors(ops, error):
    with pytest.raises(error):
        json_patch({"a": 1, "list": [0], "obj": {}}, ops)


def test_strategic_merge_patch_merges_keyed_lists():
    target = {
        "containers": [
            {"name": "a", "image": "a:1", "ports": [{"containerPort": 80}]},
            {"name": "b", "image": "b:1"},
        ],
        "args": ["x", "y"],
    }
    out = strategic_merge_patch(
        target,
        {
            "containers": [
                {"name": "a", "image": "a:2", "ports": [{"containerPort": 81}]},
                {"name": "b", "$patch": "delete"},
                {"name": "c", "image": "c:1"},
            ],
            "args": ["z"],
        },
    )
    assert out == {
        "containers": [
            {"name": "a", "image": "a:2", "ports": [{"containerPort": 80}, {"containerPort": 81}]},
            {"name": "c", "image": "c:1"},
        ],
        "args": ["z"],
    }
    replaced = strategic_merge_patch(
        target, {"containers": [{"name": "z", "image": "z"}, {"$patch": "replace"}]}
    )
    assert replaced["containers"] == [{"name": "z", "image": "z"}]


# ---------------------------------------------------------------- selectors
@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("app=reviews", {"app": "reviews"}, True),
        ("app==reviews,version=v2", {"app": "reviews", "version": "v1"}, False),
        ("version!=v1", {"app": "reviews"}, True),
        ("version in (v1,v2)", {"version": "v2"}, True),
        ("version notin (v1, v2)", {"version": "v2"}, False),
        ("app,!canary", {"app": "x"}, True),
        ("!app", {"app": "x"}, False),
        ("", {}, True),
    ],
)
def test_label_selectors(text, labels, expected):
    assert matches(parse_label_selector(text), labels) is expected


@pytest.mark.parametrize("text", ["version in (v1", "a b", "=x", "app=(x)"])
def test_bad_label_selectors(text):
    with pytest.raises(SelectorError):
        parse_label_selector(text)


def test_field_selectors():
    pod = {"metadata": {"name": "p", "namespace": "ns"}, "status": {"phase": "Running"}}
    assert field_matches(parse_field_selector("metadata.name=p,status.phase!=Pending"), pod)
    assert not field_matches(parse_field_selector("metadata.namespace==other"), pod)


def test_durations():
    assert parse_duration_ns("1m30s") == 90e9
    assert parse_duration_ns("1.5ms") == 1.5e6
    assert parse_duration_ns("0") == 0
    for bad in ("", "10", "1x", "s", "1s2"):
        with pytest.raises(ValueError):
            parse_duration_ns(bad)


# -------------------------------------------------------------------- store
def _obj(name: str, **spec: object) -> dict:
    return {"metadata": {"name": name, "namespace": "ns"}, "spec": dict(spec)}


def test_store_metadata_revisions_and_conflicts():
    store = ObjectStore()
    made = store.create("things", _obj("a", x=1))
    meta = made["metadata"]
    assert meta["generation"] == 1 and meta["resourceVersion"] == "1" == str(store.revision())
    with pytest.raises(AlreadyExists):
        store.create("things", _obj("a"))
    labelled = store.update(
        "things", "ns", "a", lambda o: o | {"metadata": o["metadata"] | {"labels": {"k": "v"}}}
    )
    assert labelled["metadata"]["generation"] == 1
    assert labelled["metadata"]["resourceVersion"] == "2"
    changed = store.replace("things", _obj("a", x=2))  # no resourceVersion: unconditional
    assert changed["metadata"]["generation"] == 2 and changed["metadata"]["uid"] == meta["uid"]
    stale = _obj("a", x=3)
    stale["metadata"]["resourceVersion"] = "1"
    with pytest.raises(Conflict):
        store.replace("things", stale)
    same = store.replace("things", store.get("things", "ns", "a"))
    assert same["metadata"]["resourceVersion"] == changed["metadata"]["resourceVersion"]
    with pytest.raises(NotFound):
        store.delete("things", "ns", "b")
    gone = store.delete("things", "ns", "a")
    assert int(gone["metadata"]["resourceVersion"]) == store.revision() == 4
    events = store.events_after(0)
    assert [e.type for e in events] == ["ADDED", "MODIFIED", "MODIFIED", "DELETED"]
    assert store.list("things") == [] and store.get("things", "ns", "a") is None


def test_store_returns_copies_and_forgets_old_history():
    store = ObjectStore(history=3)
    store.create("things", _obj("a", x=1))
    copy = store.get("things", "ns", "a")
    copy["spec"]["x"] = 99
    assert store.get("things", "ns", "a")["spec"]["x"] == 1
    for i in range(5):
        store.replace("things", _obj("a", x=i + 10))
    assert [e.revision for e in store.events_after(3)] == [4, 5, 6]
    with pytest.raises(Gone):
        store.events_after(1)


def test_store_wait_wakes_on_writes():
    store = ObjectStore()
    assert store.wait(store.revision(), 0.01) == 0
    store.create("things", _obj("a"))
    assert store.wait(0, 5) == 1  # already past: returns at once


# --------------------------------------------------------------- controller
@dataclass
class _Behaviour:
    startup_delay_s: float
    never_ready: bool = False


class _Scenario:
    def behaviour(self, version: str) -> _Behaviour:
        return _Behaviour(2.0, never_ready=version == "v9")


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def cluster():
    store = ObjectStore()
    api = ApiServer(store)  # admission (defaults) without serving HTTP
    api.ensure_namespace("default")
    clock = _Clock()
    controller = ReadinessController(store, _Scenario(), clock=clock)
    yield store, api, controller, clock
    api.stop()


def _status(store: ObjectStore, name: str) -> dict:
    return store.get("deployments", "default", name)["status"]


def _conditions(status: dict) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_controller_readiness_follows_the_scenario_delay(cluster):
    store, api, controller, clock = cluster
    api.create_object("deployments", bookinfo.deployment("reviews", "default", "v2", 2))
    assert controller.reconcile() == pytest.approx(102.0)  # wakes when the pods turn ready
    status = _status(store, "reviews-v2")
    assert status["replicas"] == status["updatedReplicas"] == 2 and "readyReplicas" not in status
    assert _conditions(status)["Progressing"] == ("True", "ReplicaSetUpdated")
    pods = store.list("pods", "default")
    assert len(pods) == 2
    assert pods[0]["metadata"]["labels"]["pod-template-hash"] == template_hash(
        store.get("deployments", "default", "reviews-v2")["spec"]["template"]
    )
    clock.now = 102.0
    assert controller.reconcile() is None
    status = _status(store, "reviews-v2")
    assert status["readyReplicas"] == status["availableReplicas"] == 2
    assert _conditions(status) == {
        "Available": ("True", "MinimumReplicasAvailable"),
        "Progressing": ("True", "NewReplicaSetAvailable"),
    }
    revision = store.revision()
    controller.reconcile()
    assert store.revision() == revision  # nothing changed: no write


def test_controller_never_ready_rollout_keeps_the_old_pods(cluster):
    store, api, controller, clock = cluster
    reviews = bookinfo.deployment("reviews", "default", "v1")
    reviews["spec"]["selector"] = {"matchLabels": {"app": "reviews"}}
    api.create_object("deployments", reviews)
    controller.reconcile()
    clock.now += 2
    controller.reconcile()
    dep = store.get("deployments", "default", "reviews-v1")
    dep["spec"]["template"]["metadata"]["labels"]["version"] = "v9"  # a crash-looping build
    store.replace("deployments", dep)
    controller.reconcile()
    clock.now += 60
    controller.reconcile()
    status = _status(store, "reviews-v1")
    assert status["replicas"] == 2 and status["updatedReplicas"] == 1
    assert status["readyReplicas"] == 1  # the old pod still serves
    assert status["observedGeneration"] == 2
    clock.now += 601
    controller.reconcile()
    assert _conditions(_status(store, "reviews-v1"))["Progressing"] == (
        "False",
        "ProgressDeadlineExceeded",
    )


def test_controller_scales_down_and_collects_orphans(cluster):
    store, api, controller, _clock = cluster
    api.create_object("deployments", bookinfo.deployment("ratings", "default", "v1", 3))
    controller.reconcile()
    assert len(store.list("pods")) == 3
    dep = store.get("deployments", "default", "ratings-v1")
    dep["spec"]["replicas"] = 0
    store.replace("deployments", dep)
    controller.reconcile()
    assert store.list("pods") == []
    status = _status(store, "ratings-v1")
    assert set(status) == {"observedGeneration", "conditions"}  # zero counts are omitted
    dep = store.get("deployments", "default", "ratings-v1")
    dep["spec"]["replicas"] = 1
    store.replace("deployments", dep)
    controller.reconcile()
    store.delete("deployments", "default", "ratings-v1")
    controller.reconcile()
    assert store.list("pods") == []
