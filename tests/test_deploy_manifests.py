"""deploy/kubernetes: valid manifests, and a release Role that grants what releases use.

"What releases use" is not written down by hand: releases run on the sandbox (promoted
through the deployed flow, rolled back through the release flow) and every request the
sandbox's API server received is mapped to the RBAC (API group, resource, verb) it needs.
Gateway API releases run the same way on the in-memory API (tests/support/fake_kube.py,
the sandbox serves no HTTPRoutes); their Role grants what they need beyond the first.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from flows.canary_release import ReleaseRolledBack, canary_release
from flows.deployed import release
from tests.conftest import REPO
from tests.support.gateway_releases import bookinfo, gateway_plan, release_into

MANIFESTS = REPO / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30"
RELEASE_ROLE = "canary-release"
GATEWAY_API_ROLE = "canary-release-gateway-api"

# Requests that need no Role: API discovery, which every authenticated identity may read
# (the built-in ClusterRole system:discovery).
_DISCOVERY = re.compile(r"^/(api|apis)(/[^/]+){0,2}/?$|^/(version|openapi)(/.*)?$")
_RESOURCE = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/[^/]+)"
    r"(?:/namespaces/[^/]+)?/(?P<resource>[^/]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?$"
)
_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}

# Granted beyond what the releases above were seen to use. Empty: every verb the Role
# names was exercised. Add here, with the reason, anything the Role must grant that a
# sandbox release cannot show (e.g. `watch` if a phase starts watching).
ALLOWANCE: set[tuple[str, str, str]] = set()

Permission = tuple[str, str, str]  # (API group, resource, verb)


def documents() -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            found += [(path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def test_every_manifest_is_valid_kubernetes():
    docs = documents()
    assert {doc["kind"] for _, doc in docs} >= {
        "Namespace",
        "ConfigMap",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "Ingress",
    }
    for path, doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name}: {doc['kind']} {doc['metadata']['name']}: {exc.message}")


def test_the_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    listed = sorted(kustomization["resources"])
    assert listed == sorted(
        p.name for p in MANIFESTS.glob("*.yaml") if p.name != "kustomization.yaml"
    )


def test_secrets_are_referenced_never_defined():
    docs = documents()
    assert "Secret" not in {doc["kind"] for _, doc in docs}
    listener = next(
        d
        for _, d in docs
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "canary-approvals"
    )
    env = {e["name"]: e for e in listener["spec"]["template"]["spec"]["containers"][0]["env"]}
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "canary-slack"
        assert "value" not in env[name]
    assert env["PREFECT_API_URL"]["valueFrom"]["configMapKeyRef"]["name"] == "canary-config"
    config = next(d for _, d in docs if d["kind"] == "ConfigMap")
    assert {"PREFECT_API_URL", "PROMETHEUS_URL"} <= set(config["data"])


def test_no_role_has_wildcards_secrets_or_cluster_scope():
    for path, doc in documents():
        assert doc["kind"] not in ("ClusterRole", "ClusterRoleBinding"), path.name
        for rule in doc.get("rules", []):
            flat = [*rule.get("apiGroups", []), *rule["resources"], *rule["verbs"]]
            assert "*" not in flat, (path.name, rule)
            assert "secrets" not in rule["resources"], (path.name, rule)


def test_the_release_role_grants_exactly_what_releases_use(
    start_sandbox, fast_plan, prefect_api_url
):
    used = permissions_used_by_releases(start_sandbox, fast_plan)

    granted = role_permissions(RELEASE_ROLE)

    assert used <= granted, f"the Role lacks {sorted(used - granted)}"
    assert granted <= used | ALLOWANCE, f"the Role grants unused {sorted(granted - used)}"
    assert {
        ("apps", "deployments", "delete"),
        ("networking.istio.io", "virtualservices", "update"),
    } <= used  # the runs did run


def permissions_used_by_releases(start_sandbox: Any, fast_plan: Any) -> set[Permission]:
    """Every permission two releases needed: one promoted, one rolled back."""
    promoted = start_sandbox("healthy")
    result = release(
        fast_plan(), kubeconfig=promoted.kubeconfig, mesh_url=promoted.sandbox.ingress_url
    )
    assert result.outcome == "promoted"
    rolled_back = start_sandbox("faulty")
    with pytest.raises(ReleaseRolledBack):
        canary_release(
            fast_plan(rollback={"canaryAction": "scaleToZero"}),
            target=rolled_back.target,
        )
    requests = [*promoted.api.requests, *rolled_back.api.requests]
    return {p for r in requests if (p := permission(r.method, r.path, r.query)) is not None}


def test_the_gateway_api_role_grants_exactly_what_gateway_api_releases_add(
    monkeypatch, plan_data, prefect_api_url
):
    used = permissions_used_by_gateway_api_releases(monkeypatch, plan_data)

    added = used - role_permissions(RELEASE_ROLE)

    assert role_permissions(GATEWAY_API_ROLE) == added
    assert {
        ("gateway.networking.k8s.io", "httproutes", "update"),
        ("", "services", "create"),
        ("", "services", "delete"),
    } <= added  # the runs did run
    assert ("apps", "deployments", "delete") in used


def permissions_used_by_gateway_api_releases(
    monkeypatch: pytest.MonkeyPatch, plan_data: Any
) -> set[Permission]:
    """Every permission two gateway-api releases needed: one promoted, one rolled back."""
    requests = []
    for checks_pass, run in ((True, "r-promoted"), (False, "r-rolled-back")):
        kube = bookinfo()
        release_into(monkeypatch, kube)
        state = canary_release(
            gateway_plan(plan_data, checks_pass=checks_pass), release_id=run, return_state=True
        )
        assert state.is_completed() == checks_pass
        requests += kube.requests
    return {p for r in requests if (p := permission(r.method, r.path, r.query)) is not None}


def permission(method: str, path: str, query: str) -> Permission | None:
    """The RBAC permission a request to the API server needs; None for discovery."""
    path = path.split("?")[0].rstrip("/") or "/"
    if _DISCOVERY.match(path):
        return None
    found = _RESOURCE.match(path)
    assert found is not None, f"unexpected API path {path}"
    group = "" if found["core"] else found["group"]
    resource = found["resource"] + (f"/{found['sub']}" if found["sub"] else "")
    named = found["name"] is not None
    if method == "GET":
        verb = "get" if named else ("watch" if re.search(r"watch=(1|true)", query) else "list")
    elif method == "DELETE":
        verb = "delete" if named else "deletecollection"
    else:
        verb = _VERBS[method]
    return group, resource, verb


def role_permissions(name: str) -> set[Permission]:
    role = next(d for _, d in documents() if d["kind"] == "Role" and d["metadata"]["name"] == name)
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


@pytest.mark.parametrize("role_name", [RELEASE_ROLE, GATEWAY_API_ROLE])
def test_the_release_identity_is_bound_where_it_releases(role_name: str):
    docs = [d for _, d in documents()]
    binding = next(
        d for d in docs if d["kind"] == "RoleBinding" and d["metadata"]["name"] == role_name
    )
    role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == role_name)
    assert binding["metadata"]["namespace"] == role["metadata"]["namespace"] == "default"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "canary-release", "namespace": "canary-system"}
    ]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role_name,
    }
