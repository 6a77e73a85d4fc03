"""Choosing the tag an automated container moves to."""

from __future__ import annotations

from datetime import UTC, datetime

from gitops_pipeline.policy.filters import parse_filter
from gitops_pipeline.policy.update import Choice, choose_tag


def _day(n: int) -> datetime:
    return datetime(2024, 1, n, tzinfo=UTC)


KNOWN = {"v0.1": _day(1), "v0.1.1": _day(2), "v0.2": _day(3), "v1.0": _day(4), "dev": None}


def test_semver_keeps_within_the_range() -> None:
    assert choose_tag(parse_filter("semver:~0.1"), "v0.1", KNOWN) == Choice("v0.1.1")
    assert choose_tag(parse_filter("semver:~0.1"), "v0.1.1", KNOWN) == Choice(None)
    assert choose_tag(parse_filter("semver:*"), "v0.1", KNOWN) == Choice("v1.0")


def test_semver_never_moves_backwards() -> None:
    assert choose_tag(parse_filter("semver:~0.1"), "v0.1.5", KNOWN) == Choice(None)


def test_glob_orders_by_created_time() -> None:
    assert choose_tag(parse_filter("glob:v0.*"), "v0.1", KNOWN) == Choice("v0.2")
    assert choose_tag(parse_filter("glob:*"), "v0.2", KNOWN) == Choice("v1.0")
    assert choose_tag(parse_filter("glob:v1.*"), "v1.0", KNOWN) == Choice(None)


def test_unknown_created_time_skips_with_a_warning() -> None:
    choice = choose_tag(parse_filter("glob:*"), "dev", KNOWN)
    assert choice.tag is None
    assert choice.warning == "skipped: the running image's tag 'dev' has no known created time"


def test_older_candidate_is_not_chosen() -> None:
    known = {"a": _day(5), "b": _day(1)}
    assert choose_tag(parse_filter("glob:b"), "a", known) == Choice(None)
