"""Readiness controller: turns Deployment specs into Pods and Deployment status.

Plays the parts of the deployment and ReplicaSet controllers, the scheduler and the
kubelet, the way KWOK fakes nodes: no container runs, but each Deployment gets one Pod per
desired replica, labelled with the pod template labels plus ``pod-template-hash``. A Pod
turns Ready ``startup_delay_s`` after it was created, where the delay comes from the
scenario for the template's ``version`` label; a ``never_ready`` version crash-loops and
never turns Ready. A template change rolls out as RollingUpdate does with surge: Pods of
the new template start, and the old ones go once all new ones are Ready (so a version that
never gets ready leaves the old Pods serving). ``Recreate`` drops the old Pods at once.

Deployment status follows the real controller: ``replicas``, ``updatedReplicas``,
``readyReplicas``, ``availableReplicas`` and ``unavailableReplicas`` (omitted when zero,
as the API omits them), ``observedGeneration`` and the ``Available`` and ``Progressing``
conditions with their usual reasons (MinimumReplicasAvailable/Unavailable,
ReplicaSetUpdated, NewReplicaSetAvailable, ProgressDeadlineExceeded).

The controller thread sleeps on the store's condition variable and wakes on any write or
at the next moment a Pod becomes ready, so it reacts within milliseconds and idles at no
CPU cost.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sandbox.kube.store import AlreadyExists, NotFound, ObjectStore, clone, now_rfc3339

Obj = dict[str, Any]
HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
NODE_NAME = "sandbox-node"
MAX_SLEEP_S = 1.0


class Scenario(Protocol):
    """``behaviour(version)`` returns an object with ``startup_delay_s`` and
    ``never_ready``; scenarios that also take ``workload=`` get the Deployment name."""

    def behaviour(self, version: str) -> Any: ...


class ReadinessFaults(Protocol):
    """Readiness flapping (``sandbox.chaos.Chaos`` is one)."""

    def flapped(self, pod: Obj, now: float) -> bool:
        """Whether a pod that would be ready is unready at ``now``."""
        ...

    def next_flap_change(self, now: float) -> float | None:
        """When flapping may next change a pod's readiness (None: never)."""
        ...


@dataclass(frozen=True)
class Behaviour:
    startup_delay_s: float
    never_ready: bool


@dataclass
class _PodClock:
    started: float  # time.monotonic() at creation
    ready_at: float | None  # None: never


def template_hash(template: Obj) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    value = int.from_bytes(digest[:8], "big")
    chars = []
    for _ in range(10):
        value, rem = divmod(value, len(HASH_ALPHABET))
        chars.append(HASH_ALPHABET[rem])
    return "".join(chars)


def _percent_or_int(value: Any, total: int, *, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        scaled = int(value[:-1]) * total
        return -(-scaled // 100) if round_up else scaled // 100
    return int(value or 0)


class ReadinessController:
    def __init__(
        self,
        store: ObjectStore,
        scenario: Scenario | None = None,
        *,
        default_delay_s: float = 0.5,
        delay_override_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        chaos: ReadinessFaults | None = None,
    ) -> None:
        self.store = store
        self.chaos = chaos  # readiness flapping (sandbox.chaos)
        self.scenario = scenario
        self.default_delay_s = default_delay_s
        self.delay_override_s = delay_override_s
        self._clock = clock
        self._pods: dict[str, _PodClock] = {}  # by pod uid
        # (ns, name) -> (generation, when that generation was first seen)
        self._progress: dict[tuple[str, str], tuple[int, float]] = {}
        self._revisions: dict[tuple[str, str], dict[str, int]] = {}  # template hash -> rev
        self._ips = itertools.count(2)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> ReadinessController:
        self._thread = threading.Thread(target=self._run, name="sandbox-controller", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.store.poke()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            seen = self.store.revision()
            wake_at = self.reconcile()
            if self.store.revision() != seen:
                continue  # our own writes, or someone else's: look again before sleeping
            sleep = MAX_SLEEP_S if wake_at is None else wake_at - self._clock()
            self.store.wait(seen, min(MAX_SLEEP_S, max(0.001, sleep)))

    # ------------------------------------------------------------ behaviour
    def behaviour(self, version: str, workload: str | None = None) -> Behaviour:
        delay, never = self.default_delay_s, False
        if self.scenario is not None:
            try:
                try:
                    found = self.scenario.behaviour(version, workload=workload)
                except TypeError:  # a scenario that knows versions only
                    found = self.scenario.behaviour(version)
            except (LookupError, ValueError):
                found = None
            if found is not None:
                scenario_delay = getattr(found, "startup_delay_s", None)
                delay = delay if scenario_delay is None else float(scenario_delay)
                never = bool(getattr(found, "never_ready", False))
        if self.delay_override_s is not None:
            delay = self.delay_override_s
        return Behaviour(delay, never)

    # ------------------------------------------------------------ reconcile
    def reconcile(self) -> float | None:
        """One pass over all Deployments; returns when the next timed change is due."""
        now = self._clock()
        deployments = self.store.list("deployments")
        pods = self.store.list("pods")
        owned: dict[tuple[str, str], list[Obj]] = {}
        for pod in pods:
            owner = _owner_deployment(pod)
            if owner is not None:
                owned.setdefault((pod["metadata"]["namespace"], owner), []).append(pod)
        wake: list[float] = []
        live = set()
        for dep in deployments:
            key = (dep["metadata"]["namespace"], dep["metadata"]["name"])
            live.add(key)
            due = self._reconcile_deployment(dep, owned.get(key, []), now)
            if due is not None:
                wake.append(due)
        if self.chaos is not None and (flap := self.chaos.next_flap_change(now)) is not None:
            wake.append(flap)
        for key, orphans in owned.items():
            if key not in live:  # the Deployment is gone: garbage-collect its Pods
                for pod in orphans:
                    self._delete_pod(pod)
        live_uids = {p["metadata"]["uid"] for p in self.store.snapshot("pods")[0]}
        self._pods = {uid: c for uid, c in self._pods.items() if uid in live_uids}
        for table in (self._progress, self._revisions):
            for key in [k for k in table if k not in live]:
                del table[key]
        return min(wake) if wake else None

    def _reconcile_deployment(self, dep: Obj, pods: list[Obj], now: float) -> float | None:
        meta, spec = dep["metadata"], dep.get("spec") or {}
        if spec.get("paused"):
            return None
        desired = int(spec.get("replicas", 1))
        template = spec.get("template") or {}
        thash = template_hash(template)
        key = (meta["namespace"], meta["name"])
        generation = int(meta.get("generation", 1))
        if self._progress.get(key, (None, 0.0))[0] != generation:
            self._progress[key] = (generation, now)  # a new spec restarts the clock
        current = [p for p in pods if _hash(p) == thash]
        old = [p for p in pods if _hash(p) != thash]
        current = self._scale(dep, thash, current, desired, now)
        ready_new = sum(self._ready(p, now) for p in current)
        recreate = (spec.get("strategy") or {}).get("type") == "Recreate"
        if recreate or ready_new >= desired:
            for pod in old:
                self._delete_pod(pod)
            old = []
        pending = [self._sync_pod(p, now) for p in current + old]
        self._write_status(dep, thash, current, old, now)
        deadline = self._progress[key][1] + float(spec.get("progressDeadlineSeconds", 600))
        due = [t for t in pending if t is not None]
        if ready_new < desired and deadline > now:
            due.append(deadline + 0.001)
        return min(due) if due else None

    # ----------------------------------------------------------------- pods
    def _scale(
        self, dep: Obj, thash: str, current: list[Obj], desired: int, now: float
    ) -> list[Obj]:
        current = sorted(current, key=lambda p: p["metadata"]["creationTimestamp"])
        while len(current) > desired:
            # Scale down the least useful first: unready, then newest.
            victim = min(current, key=lambda p: (self._ready(p, now), -current.index(p)))
            current.remove(victim)
            self._delete_pod(victim)
        for _ in range(desired - len(current)):
            pod = self._create_pod(dep, thash, now)
            if pod is not None:
                current.append(pod)
        return current

    def _create_pod(self, dep: Obj, thash: str, now: float) -> Obj | None:
        meta, template = dep["metadata"], dep["spec"].get("template") or {}
        tmeta = template.get("metadata") or {}
        rs_name = f"{meta['name']}-{thash}"
        labels = dict(tmeta.get("labels") or {}) | {"pod-template-hash": thash}
        behaviour = self.behaviour(labels.get("version", ""), meta["name"])
        pod_meta: Obj = {
            "name": f"{rs_name}-{_suffix()}",
            "generateName": f"{rs_name}-",
            "namespace": meta["namespace"],
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": rs_name,
                    "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{meta['uid']}/{thash}")),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        }
        if tmeta.get("annotations"):
            pod_meta["annotations"] = dict(tmeta["annotations"])
        spec = clone(template.get("spec") or {}) | {"nodeName": NODE_NAME}
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": spec, "status": {}}
        pod["status"] = _pod_status(pod, False, behaviour.never_ready, self._ip())
        try:
            created = self.store.create("pods", pod)
        except AlreadyExists:
            return None
        ready_at = None if behaviour.never_ready else now + behaviour.startup_delay_s
        self._pods[created["metadata"]["uid"]] = _PodClock(now, ready_at)
        return created

    def _ip(self) -> str:
        n = next(self._ips)
        return f"10.244.{(n // 250) % 256}.{n % 250 + 2}"

    def _clock_for(self, pod: Obj, now: float) -> _PodClock:
        uid = pod["metadata"]["uid"]
        if uid not in self._pods:  # a Pod we did not start (e.g. after a restart)
            labels = pod["metadata"].get("labels") or {}
            behaviour = self.behaviour(labels.get("version", ""), _owner_deployment(pod))
            ready_at = None if behaviour.never_ready else now + behaviour.startup_delay_s
            self._pods[uid] = _PodClock(now, ready_at)
        return self._pods[uid]

    def _ready(self, pod: Obj, now: float) -> bool:
        clock = self._clock_for(pod, now)
        started = clock.ready_at is not None and now >= clock.ready_at
        return started and not (self.chaos is not None and self.chaos.flapped(pod, now))

    def _sync_pod(self, pod: Obj, now: float) -> float | None:
        """Write the Pod's readiness if it changed; returns when it will change next."""
        clock = self._clock_for(pod, now)
        ready = self._ready(pod, now)
        status = pod.get("status") or {}
        if _is_ready(status) != ready:
            never = clock.ready_at is None
            new_status = _pod_status(pod, ready, never, status.get("podIP", self._ip()))
            try:
                self.store.update(
                    "pods",
                    pod["metadata"]["namespace"],
                    pod["metadata"]["name"],
                    lambda p: p | {"status": new_status},
                )
            except NotFound:
                return None
        if ready or clock.ready_at is None or clock.ready_at <= now:
            return None  # ready, never ready, or down for flapping (reconcile wakes for that)
        return clock.ready_at

    def _delete_pod(self, pod: Obj) -> None:
        with contextlib.suppress(NotFound):
            self.store.delete("pods", pod["metadata"]["namespace"], pod["metadata"]["name"])
        self._pods.pop(pod["metadata"]["uid"], None)

    # --------------------------------------------------------------- status
    def _write_status(
        self, dep: Obj, thash: str, current: list[Obj], old: list[Obj], now: float
    ) -> None:
        meta = dep["metadata"]
        spec = dep.get("spec") or {}
        desired = int(spec.get("replicas", 1))
        ready = sum(self._ready(p, now) for p in current + old)
        total = len(current) + len(old)
        counts = {
            "replicas": total,
            "updatedReplicas": len(current),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": max(max(total, desired) - ready, 0),
        }
        rs_name = f"{meta['name']}-{thash}"
        started = self._progress[(meta["namespace"], meta["name"])][1]
        complete = len(current) == desired and ready >= desired and not old
        deadline = float(spec.get("progressDeadlineSeconds", 600))
        rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
        max_unavailable = _percent_or_int(
            rolling.get("maxUnavailable", "25%"), desired, round_up=False
        )
        available = ready >= desired - max_unavailable
        conditions = [
            (
                "Available",
                available,
                "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                "Deployment has minimum availability."
                if available
                else "Deployment does not have minimum availability.",
            ),
            _progressing(rs_name, complete, now - started > deadline),
        ]
        revision = self._revision(dep, thash)

        def mutate(obj: Obj) -> Obj:
            if obj["metadata"].get("generation") != meta.get("generation"):
                return obj  # the spec moved on; the next pass sees the new one
            old_status = obj.get("status") or {}
            status = {k: v for k, v in counts.items() if v}
            status["observedGeneration"] = meta.get("generation", 1)
            status["conditions"] = _conditions(old_status.get("conditions") or [], conditions)
            obj["status"] = status
            annotations = obj["metadata"].setdefault("annotations", {})
            annotations[REVISION_ANNOTATION] = revision
            return obj

        with contextlib.suppress(NotFound):
            self.store.update("deployments", meta["namespace"], meta["name"], mutate)

    def _revision(self, dep: Obj, thash: str) -> str:
        """``deployment.kubernetes.io/revision``: bumped each time a new template rolls."""
        key = (dep["metadata"]["namespace"], dep["metadata"]["name"])
        known = self._revisions.setdefault(key, {})
        if thash not in known:
            annotations = dep["metadata"].get("annotations") or {}
            stored = annotations.get(REVISION_ANNOTATION, "0")
            floor = int(stored) if str(stored).isdigit() else 0
            known[thash] = max([floor, *known.values()]) + 1
        return str(known[thash])


# ------------------------------------------------------------------ helpers
def _owner_deployment(pod: Obj) -> str | None:
    for ref in pod["metadata"].get("ownerReferences") or []:
        if ref.get("kind") == "ReplicaSet" and ref.get("controller"):
            name, _, suffix = ref.get("name", "").rpartition("-")
            if name and len(suffix) == 10:
                return name
    return None


def _hash(pod: Obj) -> str:
    return (pod["metadata"].get("labels") or {}).get("pod-template-hash", "")


def _suffix() -> str:
    return uuid.uuid4().hex[:5].translate(str.maketrans("aeiou01", "bcdfg24"))


def _is_ready(status: Obj) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def _pod_status(pod: Obj, ready: bool, never: bool, ip: str) -> Obj:
    stamp = now_rfc3339()
    old = pod.get("status") or {}
    start = old.get("startTime", stamp)
    names = [c.get("name", "") for c in pod["spec"].get("containers") or []]
    flag = "True" if ready else "False"
    not_ready = {
        "reason": "ContainersNotReady",
        "message": f"containers with unready status: [{' '.join(names)}]",
    }
    conditions = [
        {"type": t, "status": "True", "lastTransitionTime": start}
        for t in ("PodReadyToStartContainers", "Initialized", "PodScheduled")
    ]
    for kind in ("ContainersReady", "Ready"):
        conditions.append(
            {"type": kind, "status": flag, "lastTransitionTime": stamp}
            | ({} if ready else not_ready)
        )
    statuses = []
    for container in pod["spec"].get("containers") or []:
        entry: Obj = {
            "name": container.get("name", ""),
            "image": container.get("image", ""),
            "imageID": f"{container.get('image', '')}@sha256:{'0' * 64}",
            "containerID": f"containerd://{uuid.uuid4().hex}{uuid.uuid4().hex}",
            "ready": ready,
            "started": not never,
            "restartCount": 0,
        }
        if never:
            entry["restartCount"] = 5
            entry["state"] = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off 2m40s restarting failed container={entry['name']}",
                }
            }
            entry["lastState"] = {
                "terminated": {
                    "exitCode": 1,
                    "reason": "Error",
                    "startedAt": start,
                    "finishedAt": stamp,
                }
            }
        else:
            entry["state"] = {"running": {"startedAt": start}}
        statuses.append(entry)
    return {
        "phase": "Running",
        "conditions": conditions,
        "hostIP": "172.18.0.2",
        "hostIPs": [{"ip": "172.18.0.2"}],
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": start,
        "qosClass": "BestEffort",
        "containerStatuses": statuses,
    }


def _progressing(rs_name: str, complete: bool, timed_out: bool) -> tuple[str, bool, str, str]:
    if complete:
        return (
            "Progressing",
            True,
            "NewReplicaSetAvailable",
            f'ReplicaSet "{rs_name}" has successfully progressed.',
        )
    if timed_out:
        return (
            "Progressing",
            False,
            "ProgressDeadlineExceeded",
            f'ReplicaSet "{rs_name}" has timed out progressing.',
        )
    return ("Progressing", True, "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')


def _conditions(previous: list[Obj], wanted: list[tuple[str, bool, str, str]]) -> list[Obj]:
    """Conditions keep their timestamps while unchanged, as the controller keeps them."""
    stamp = now_rfc3339()
    before = {c.get("type"): c for c in previous}
    out = []
    for kind, ok, reason, message in wanted:
        status = "True" if ok else "False"
        old = before.get(kind) or {}
        same_status = old.get("status") == status
        same = same_status and old.get("reason") == reason and old.get("message") == message
        out.append(
            {
                "type": kind,
                "status": status,
                "lastUpdateTime": old["lastUpdateTime"] if same else stamp,
                "lastTransitionTime": old["lastTransitionTime"] if same_status else stamp,
                "reason": reason,
                "message": message,
            }
        )
    return out
