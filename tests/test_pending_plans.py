"""The plan's `schedule` (the release train's pending version) and releasing another version."""

from __future__ import annotations

import pytest
import yaml

from canary.plan import PlanError, parse_plan, plan_from_dict
from canary.plan.configs import resolve_plan
from canary.plan.versions import pending_release, with_canary

V3 = "docker.io/istio/examples-bookinfo-reviews-v3:1.20.0"


def problems(data: dict) -> list[str]:
    with pytest.raises(PlanError) as raised:
        parse_plan(yaml.safe_dump(data, sort_keys=False), "plan.yaml")
    return [str(p) for p in raised.value.problems]


def test_a_pending_version_is_released_with_its_image(plan_data):
    plan = plan_from_dict(plan_data(schedule={"pendingVersion": "v3", "pendingImage": V3}))

    pending = pending_release(plan)

    assert (pending.canary.version, pending.canary.image) == ("v3", V3)
    assert pending.canary_deployment == "reviews-v3"
    assert pending.stable.version == "v1" and pending.schedule is None


def test_nothing_is_pending_once_the_version_is_stable(plan_data):
    plan = plan_from_dict(plan_data(schedule={"pendingVersion": "v1"}))

    assert pending_release(plan) is None


def test_a_pending_canary_as_written_needs_no_image(plan_data):
    plan = plan_from_dict(plan_data(schedule={"pendingVersion": "v2"}))

    assert pending_release(plan).canary == plan.canary


def test_a_new_version_without_its_image_is_a_plan_error(plan_data):
    found = problems(plan_data(schedule={"pendingVersion": "v3"}))

    assert len(found) == 1
    assert found[0].startswith("plan.yaml:")
    assert found[0].endswith(
        "schedule.pendingImage: give the image of v3 (canary.image is the image of v2)"
    )


def test_a_bad_pending_version_names_its_field(plan_data):
    found = problems(plan_data(schedule={"pendingVersion": "v 3!", "pendingImage": V3}))

    assert "schedule.pendingVersion: 'v 3!' is not a Kubernetes label value" in found[0]


def test_another_version_needs_its_image(fast_plan):
    with pytest.raises(PlanError, match="give the image of v3"):
        with_canary(fast_plan(), version="v3")
    assert with_canary(fast_plan(), version="v3", image=V3).canary.image == V3
    assert with_canary(fast_plan()) == fast_plan()


def test_plans_are_read_from_the_configs_directory_only(monkeypatch, tmp_path, plan_data):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "reviews.yaml").write_text(yaml.safe_dump(plan_data()))
    (tmp_path / "elsewhere.yaml").write_text(yaml.safe_dump(plan_data()))
    monkeypatch.setenv("CANARY_CONFIGS_DIR", str(configs))
    monkeypatch.chdir(tmp_path)

    assert resolve_plan("reviews.yaml").service == "reviews"
    assert resolve_plan("configs/reviews.yaml").service == "reviews"
    for outside in ("elsewhere.yaml", "../elsewhere.yaml", str(tmp_path / "elsewhere.yaml")):
        with pytest.raises(PlanError, match="plans are read from there only"):
            resolve_plan(outside)
