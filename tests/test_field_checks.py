"""The value checks behind validation, and plans they must not refuse.

The classes of bad plans are in tests/bad_plans (each refused by validate, plan and run);
here are the grammars one value at a time, and the good plans next to the bad ones.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from canary.analysis.istio_metrics import TEMPLATES
from canary.analysis.spec import render, safe_values
from canary.field_checks import (
    dns_subdomain,
    image_reference,
    label_key,
    matches_every_value,
    promql_query,
    re2_regex,
)
from canary.plan import PlanError, parse_plan, plan_from_dict
from canary.plan.strict_yaml import YamlRefused, load

BOOKINFO = Path("configs/bookinfo-reviews.yaml")


def canary(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "canary", *args], capture_output=True, text=True, timeout=120
    )


def bookinfo(**changes: Any) -> dict[str, Any]:
    data = yaml.safe_load(BOOKINFO.read_text())
    data.update(changes)
    return data


# --- grammars ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [
        "nginx",
        "reviews:v2",
        "docker.io/istio/examples-bookinfo-reviews-v2:1.20.0",
        "localhost:5000/team/app:1.0-rc_1",
        "127.0.0.1:5000/a/b/c",
        "[::1]:5000/app",
        "localhost/o/my_app__x---y:latest",
        "app@sha256:" + "a" * 64,
        "localhost:5000/app:1@sha256:" + "0" * 64,
    ],
)
def test_image_references_that_registries_accept(image: str):
    assert image_reference(image) == image


@pytest.mark.parametrize(
    "image",
    [
        "",
        "BAD IMAGE::latest@@",
        "Reviews:v2",
        "app:",
        ":v1",
        "a//b",
        "app@sha256:xyz",
        "x/",
        "a:b:c",
    ],
)
def test_image_references_that_are_refused(image: str):
    with pytest.raises(ValueError):
        image_reference(image)


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("reviews", True),
        ("reviews.default.svc.cluster.local", True),
        ("reviews..default", False),
        ("reviews.", False),
        ("-reviews", False),
        ("Reviews", False),
        ("a" * 64, False),
    ],
)
def test_hosts_are_dns_1123(host: str, ok: bool):
    if ok:
        assert dns_subdomain(host) == host
    else:
        with pytest.raises(ValueError, match="DNS-1123"):
            dns_subdomain(host)


@pytest.mark.parametrize("key", ["version", "app.kubernetes.io/version", "istio.io/rev"])
def test_label_keys(key: str):
    assert label_key(key) == key


@pytest.mark.parametrize("regex", ["(?i)jason", "^(.*?;)?(user=jason)(;.*)?$", "[a-z]{3,8}"])
def test_re2_accepts_what_envoy_accepts(regex: str):
    assert re2_regex(regex) == regex


@pytest.mark.parametrize("regex", ["(?=x)", "(a)\\1", "(?<!a)b", "a{1001}", "("])
def test_re2_refuses_what_envoy_refuses_and_writes_nothing(regex: str, capfd):
    with pytest.raises(ValueError, match="is not valid RE2"):
        re2_regex(regex)
    assert capfd.readouterr().err == ""  # RE2's own error log stays off


@pytest.mark.parametrize(
    ("kind", "value", "every"),
    [
        ("prefix", "", True),
        ("regex", ".*", True),
        ("regex", ".+", True),
        ("regex", "(?s).*", True),
        ("exact", "", False),
        ("prefix", "jas", False),
        ("regex", "jason|alice", False),
        ("regex", "^(.*?;)?(user=jason)(;.*)?$", False),
    ],
)
def test_matches_that_take_every_user(kind: str, value: str, every: bool):
    assert matches_every_value(kind, value) is every  # type: ignore[arg-type]


def test_the_builtin_queries_are_valid_promql():
    values = {**safe_values("default", "reviews", "reviews-v2", "reviews-v1"), "interval": "1m"}
    for name, template in TEMPLATES.items():
        assert promql_query(render(template, {**values, "le": "100"})), name


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ('sum(up{a="b"}})', "unexpected right brace"),
        ("sum(up", "unclosed left parenthesis"),
        ("rate(up)", "expected type matrix"),
        ('up{a=~"("}', "illegal regex"),
        ("up[5m]", "range vector"),
        ('"text"', "string"),
    ],
)
def test_promql_is_parsed(query: str, reason: str):
    with pytest.raises(ValueError, match=reason):
        promql_query(query)


# --- strict YAML -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "field", "message"),
    [
        ("a: 1\nb:\n  c: 1\n  c: 2\n", 4, "b.c", "given twice (first on line 3)"),
        ("a:\n  - {x: 1}\n  - {x: 1, x: 2}\n", 3, "a[1].x", "given twice"),
        ("a: !!binary aGk=\n", 1, "a", "YAML tags (!!binary)"),
        ("a: &x 1\n", 1, "a", "YAML anchors (&x)"),
        ("a: [1, *x]\n", 1, "a[1]", "YAML aliases (*x)"),
        ("a: {<<: {b: 1}}\n", 1, 'a."<<"', "merge keys"),
        ("x:\n  ? [a]\n  : 1\n", 2, "x", "a mapping key must be a plain value"),
        ('"a\\nb": 1\n"a\\nb": 2\n', 2, '"a\\nb"', "given twice"),
    ],
)
def test_yaml_refusals_name_line_and_field(text: str, line: int, field: str, message: str):
    with pytest.raises(YamlRefused) as caught:
        load(text)
    assert (caught.value.line, caught.value.field) == (line, field)
    assert message in caught.value.message


def test_a_quoted_merge_key_is_an_ordinary_key():
    assert load('"<<": 1\n')[0] == {"<<": 1}


def test_an_inline_plan_of_20_mb_is_refused_in_one_line():
    data = bookinfo(tests={"checks": [{"name": "x" * (20 << 20)}]})
    with pytest.raises(PlanError) as caught:
        plan_from_dict(data, "<inline plan>")
    assert str(caught.value) == "<inline plan>:0: the plan is larger than 1 MiB"


# --- plans that must pass ----------------------------------------------------------------


def test_a_json_plan_validates_and_plans(tmp_path: Path):
    path = tmp_path / "bookinfo.json"
    path.write_text(json.dumps(bookinfo(), indent=2))
    assert canary("validate", str(path)).returncode == 0
    shown = canary("plan", str(path))
    assert shown.returncode == 0 and "header-route" in shown.stdout, shown.stderr


def test_anyone_with_four_eyes_is_a_plan():
    gates = [{"before": "promote", "approvers": {"anyone": True}, "fourEyes": True}]
    assert plan_from_dict(bookinfo(gates=gates)).gates[0].four_eyes


def test_a_virtual_service_shared_with_other_routes_is_a_plan():
    routing = {
        "virtualService": "bookinfo",
        "destinationRule": "reviews",
        "host": "reviews.default.svc.cluster.local",
        "versionLabel": "app.kubernetes.io/version",
        "routes": ["reviews-route"],
    }
    plan = plan_from_dict(bookinfo(routing=routing))
    assert (plan.virtual_service, plan.host) == ("bookinfo", "reviews.default.svc.cluster.local")


def test_header_routes_on_a_cookie_or_a_header_with_a_uri_are_plans():
    match = [
        {"headers": {"cookie": {"regex": "^(.*?;)?(user=jason)(;.*)?$"}}},
        {"headers": {"end-user": {"exact": "jason"}}, "uri": {"prefix": "/reviews"}},
    ]
    plan = plan_from_dict(bookinfo(headerRoute={"match": match, "hold": "1m"}))
    assert plan.header_route is not None and len(plan.header_route.match) == 2


def test_a_custom_metric_and_long_durations_within_bounds_are_a_plan():
    data = bookinfo(promotion={"hold": "24h"})
    data["analysis"]["metrics"].append(
        {
            "name": "queue-depth",
            "query": 'max(max_over_time(queue{pod=~"{{ canary }}-.*"}[{{ interval }}]))',
            "thresholdRange": {"max": 1.5e6},
        }
    )
    plan = parse_plan(yaml.safe_dump(data))
    assert plan.promotion.hold == 86400 and plan.analysis.metrics[-1].name == "queue-depth"
