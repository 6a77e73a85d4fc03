"""Policy changes from automate/lock/policy requests: checked where asked, per workload values."""

from __future__ import annotations

import pytest

from gitops_pipeline.policy.changes import PolicyUpdate


def test_automate_lock_and_filters_become_policy_values() -> None:
    update = PolicyUpdate(
        automate=True, lock=True, user="ann", message="hold", tag_all="semver:~1", tags={"b": "*"}
    )
    assert update.values(["a", "b"]) == {
        "automated": "true",
        "locked": "true",
        "locked_user": "ann",
        "locked_msg": "hold",
        "tag.a": "semver:~1",
        "tag.b": None,
    }
    assert update.summary() == "Automated, Locked, Updated tag filters"


def test_deautomate_and_unlock_remove_annotations() -> None:
    assert PolicyUpdate(automate=False, lock=False).values(["a"]) == {
        "automated": None,
        "locked": None,
        "locked_user": None,
        "locked_msg": None,
    }


@pytest.mark.parametrize(
    ("update", "error"),
    [
        (PolicyUpdate(tags={"app": "semver:not a range"}), "container app: .*semver"),
        (PolicyUpdate(tag_all="regex:(unclosed"), r"container \(all\): .*regular expression"),
        (PolicyUpdate(tags={"app": "glob:"}), "empty pattern"),
        (PolicyUpdate(tags={"": "v1"}), "container=filter"),
        (PolicyUpdate(tags={"a b/c": "semver:>=1"}), "'a b/c' is not a container name"),
        (PolicyUpdate(tags={"App": "v1"}), "not a container name"),
        (PolicyUpdate(), "no policy change"),
    ],
)
def test_invalid_changes_are_refused(update: PolicyUpdate, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        update.check()
