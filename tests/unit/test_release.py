"""Release planning: which containers move where, and the fluxctl outcome of every workload."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from gitops_pipeline.release import ReleaseError, ReleaseSpec, plan_release


def _deployment(name: str, images: dict[str, str], **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "annotations": dict(annotations)},
        "spec": {
            "template": {
                "spec": {"containers": [{"name": c, "image": i} for c, i in images.items()]}
            }
        },
    }


TAGS: dict[str, dict[str, datetime | None]] = {
    "reg.example/app": {
        "v0.1": datetime(2024, 1, 1, tzinfo=UTC),
        "v0.2": datetime(2024, 1, 2, tzinfo=UTC),
        "v1.0": datetime(2024, 1, 3, tzinfo=UTC),
    },
    "reg.example/side": {"1": datetime(2024, 1, 1, tzinfo=UTC)},
}


def _tags(repository: str) -> Mapping[str, datetime | None]:
    return TAGS.get(repository, {})


OBJECTS = [
    _deployment("web", {"app": "reg.example/app:v0.1", "side": "reg.example/side:1"}),
    _deployment(
        "locked",
        {"app": "reg.example/app:v0.1"},
        **{"fluxcd.io/locked": "true", "fluxcd.io/locked_user": "ann"},
    ),
    _deployment("pinned", {"app": "reg.example/app:v0.1"}, **{"fluxcd.io/tag.app": "semver:~0.1"}),
    _deployment("other", {"db": "reg.example/db:5"}),
    _deployment("auto", {"app": "reg.example/app:v0.1"}, **{"fluxcd.io/automated": "true"}),
]


def _outcome(spec: ReleaseSpec) -> dict[str, tuple[str, str, list[str]]]:
    plan = plan_release(OBJECTS, "default", spec, _tags)
    return {r.workload: (r.status, r.error, [u.target for u in r.updates]) for r in plan.results}


def test_update_image_for_all_workloads_skips_locked_and_unused() -> None:
    outcome = _outcome(ReleaseSpec(all_workloads=True, image="reg.example/app:v0.2"))
    assert outcome["default:Deployment/web"] == ("success", "", ["reg.example/app:v0.2"])
    assert outcome["default:Deployment/locked"][:2] == ("skipped", "locked by ann")
    assert outcome["default:Deployment/pinned"] == (
        "skipped",
        "tag v0.2 does not match filter semver:~0.1",
        [],
    )
    assert "default:Deployment/other" not in outcome


def test_explicit_image_outside_the_filter_is_skipped_unless_forced() -> None:
    spec = ReleaseSpec(workloads=("default:deployment/pinned",), image="reg.example/app:v1.0")
    assert _outcome(spec)["default:Deployment/pinned"] == (
        "skipped",
        "tag v1.0 does not match filter semver:~0.1",
        [],
    )
    forced = ReleaseSpec(
        workloads=("default:deployment/pinned",), image="reg.example/app:v1.0", force=True
    )
    assert _outcome(forced)["default:Deployment/pinned"][2] == ["reg.example/app:v1.0"]


def test_locked_workload_released_only_when_named_with_force() -> None:
    named = ReleaseSpec(workloads=("default:deployment/locked",), image="reg.example/app:v0.2")
    assert _outcome(named)["default:Deployment/locked"][0] == "skipped"
    forced = ReleaseSpec(
        workloads=("default:deployment/locked",), image="reg.example/app:v0.2", force=True
    )
    assert _outcome(forced)["default:Deployment/locked"][0] == "success"
    everything = ReleaseSpec(all_workloads=True, image="reg.example/app:v0.2", force=True)
    assert _outcome(everything)["default:Deployment/locked"][0] == "skipped"


def test_update_all_images_follows_each_filter() -> None:
    outcome = _outcome(ReleaseSpec(all_workloads=True))
    assert outcome["default:Deployment/web"] == ("success", "", ["reg.example/app:v1.0"])
    assert outcome["default:Deployment/pinned"] == ("skipped", "image up to date", [])


def test_exclude_and_unknown_workload() -> None:
    spec = ReleaseSpec(
        workloads=("default:deployment/web", "default:deployment/nope"),
        image="reg.example/app:v0.2",
        exclude=("default:deployment/web",),
    )
    outcome = _outcome(spec)
    assert outcome["default:Deployment/web"][:2] == ("ignored", "excluded")
    assert outcome["default:deployment/nope"][:2] == ("failed", "not found in the repository")


def test_automation_plans_automated_unlocked_workloads_only() -> None:
    plan = plan_release(
        OBJECTS, "default", ReleaseSpec(all_workloads=True, automated_only=True), _tags
    )
    assert [(w, u.target) for w, u in plan.updates] == [
        ("default:Deployment/auto", "reg.example/app:v1.0")
    ]
    assert plan.message() == "Release reg.example/app:v1.0"


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        (ReleaseSpec(), "name workloads"),
        (ReleaseSpec(workloads=("web",), all_workloads=True), "name workloads"),
        (ReleaseSpec(workloads=("web",)), "namespace:Kind/name"),
        (ReleaseSpec(all_workloads=True, image="reg.example/app"), "must name a tag"),
        (ReleaseSpec(all_workloads=True, image="Bad Image:1"), "--update-image"),
    ],
)
def test_malformed_requests_are_refused(spec: ReleaseSpec, error: str) -> None:
    with pytest.raises(ReleaseError, match=error):
        plan_release(OBJECTS, "default", spec, _tags)
