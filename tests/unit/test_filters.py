"""Tag filters: glob, semver (npm ranges) and regex, as the annotations write them."""

from __future__ import annotations

import pytest

from gitops_pipeline.policy.filters import newest_by_version, parse_filter, tag_version

TAGS = ["v0.1", "v0.1.1", "v0.2", "1.0.0", "1.0.1-rc.1", "latest", "main-3f2a1bc", "v1.1"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("semver:~0.1", ["v0.1.1", "v0.1"]),
        ("semver:^1.0", ["v1.1", "1.0.0"]),
        ("semver:>=0.2 <1.1", ["1.0.0", "v0.2"]),
        ("semver:1.x", ["v1.1", "1.0.0"]),
        ("semver:*", ["v1.1", "1.0.0", "v0.2", "v0.1.1", "v0.1"]),
        ("semver:>=1.0.1-rc.0 <1.0.2", ["1.0.1-rc.1"]),  # pre-releases only when asked for
    ],
)
def test_semver_ranges_order_by_version(text: str, expected: list[str]) -> None:
    assert newest_by_version(TAGS, parse_filter(text)) == expected


@pytest.mark.parametrize(
    ("text", "matching"),
    [
        ("glob:v0.*", ["v0.1", "v0.1.1", "v0.2"]),
        ("main-*", ["main-3f2a1bc"]),  # no prefix means glob
        ("glob:*", TAGS),
        ("regex:^main-[0-9a-f]{7}$", ["main-3f2a1bc"]),
        ("regexp:v0\\.1(\\.\\d+)?", ["v0.1", "v0.1.1"]),
    ],
)
def test_glob_and_regex_select(text: str, matching: list[str]) -> None:
    tag_filter = parse_filter(text)
    assert tag_filter.select(TAGS) == matching
    assert not tag_filter.orders_by_version


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("semver:~~1", "invalid semver range"),
        ("regex:([", "invalid regular expression"),
        ("glob:", "empty pattern"),
        ("semver:", "empty pattern"),
    ],
)
def test_invalid_filters_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_filter(text)


def test_tag_versions() -> None:
    assert str(tag_version("v1.2")) == "1.2.0"
    assert str(tag_version("1.2.3-alpine")) == "1.2.3-alpine"
    assert tag_version("latest") is None
    assert tag_version("01.2.3") is None
