"""Reading workload policies from annotations, current and legacy prefixes."""

from __future__ import annotations

from gitops_pipeline.policy.annotations import DEFAULT_FILTER, read_policy
from gitops_pipeline.policy.filters import TagFilter


def test_current_prefix() -> None:
    policy = read_policy(
        {
            "fluxcd.io/automated": "true",
            "fluxcd.io/tag.app": "semver:~0.1",
            "filter.fluxcd.io/sidecar": "glob:1.*",
        }
    )
    assert policy.automated and not policy.locked
    assert policy.filter_for("app") == TagFilter("semver", "~0.1")
    assert policy.filter_for("sidecar") == TagFilter("glob", "1.*")
    assert policy.filter_for("other") == DEFAULT_FILTER


def test_legacy_prefix_and_lock() -> None:
    policy = read_policy(
        {
            "flux.weave.works/locked": "true",
            "flux.weave.works/locked_user": "ana",
            "flux.weave.works/locked_msg": "incident 42",
            "flux.weave.works/tag.app": "regexp:^v1\\.",
        }
    )
    assert policy.locked and not policy.automated
    assert (policy.locked_user, policy.locked_msg) == ("ana", "incident 42")
    assert policy.filter_for("app") == TagFilter("regex", "^v1\\.")


def test_bad_filters_are_reported() -> None:
    policy = read_policy({"fluxcd.io/tag.app": "semver:~~1", "fluxcd.io/automated": "TRUE"})
    assert policy.automated
    assert policy.filter_for("app") == DEFAULT_FILTER
    assert len(policy.errors) == 1
    assert policy.errors[0].startswith("container app: tag filter 'semver:~~1'")
