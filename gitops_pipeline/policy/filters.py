"""Tag filters, as Flux v1 wrote them in `fluxcd.io/tag.<container>` annotations.

- `glob:<pattern>` (also a bare pattern with no prefix): shell-style match; ordered by the
  image's created time.
- `semver:<range>`: npm-style ranges (`~1.2`, `^1.2`, `>=1.0 <2.0`, `1.x`, `*`); a leading `v` on
  tags is fine; pre-releases only when the range names one; ordered by version.
- `regex:` / `regexp:<pattern>`: a full match of the tag; ordered by created time.

Invalid filters raise `ValueError` with a message naming the filter, where they are set.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import semantic_version

# Tags that read as versions: `1`, `1.2`, `v1.2.3`, `1.2.3-rc.1+build`. Short forms are
# completed with zeros, as Flux v1's semver library did.
_VERSION_RE = re.compile(
    r"^v?(0|[1-9]\d*)(?:\.(0|[1-9]\d*))?(?:\.(0|[1-9]\d*))?"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)

Kind = Literal["glob", "semver", "regex"]


@functools.lru_cache(maxsize=65536)
def tag_version(tag: str) -> semantic_version.Version | None:
    """The version a tag names, or None when it is not a version."""
    match = _VERSION_RE.match(tag)
    if match is None:
        return None
    major, minor, patch, pre, build = match.groups()
    return semantic_version.Version(
        major=int(major),
        minor=int(minor or 0),
        patch=int(patch or 0),
        prerelease=tuple(pre.split(".")) if pre else (),
        build=tuple(build.split(".")) if build else (),
    )


@functools.cache
def _npm_spec(pattern: str) -> semantic_version.NpmSpec:
    return semantic_version.NpmSpec(pattern)


@dataclass(frozen=True)
class TagFilter:
    kind: Kind
    pattern: str

    @property
    def orders_by_version(self) -> bool:
        """Semver filters need only the tag list; the others need created times."""
        return self.kind == "semver"

    def matches(self, tag: str) -> bool:
        if self.kind == "glob":
            return fnmatch.fnmatchcase(tag, self.pattern)
        if self.kind == "regex":
            return re.fullmatch(self.pattern, tag) is not None
        version = tag_version(tag)
        return version is not None and version in _npm_spec(self.pattern)

    def select(self, tags: Iterable[str]) -> list[str]:
        return [tag for tag in tags if self.matches(tag)]

    def __str__(self) -> str:
        return f"{self.kind}:{self.pattern}"


def parse_filter(text: str) -> TagFilter:
    """Parse `glob:`, `semver:`, `regex:`/`regexp:` or a bare glob; raise `ValueError`."""
    prefix, sep, rest = text.partition(":")
    if not sep or prefix not in ("glob", "semver", "regex", "regexp"):
        prefix, rest = "glob", text
    pattern = rest.strip()
    if not pattern:
        raise ValueError(f"tag filter {text!r} has an empty pattern")
    if prefix == "semver":
        try:
            semantic_version.NpmSpec(pattern)
        except ValueError as exc:
            raise ValueError(f"tag filter {text!r}: invalid semver range ({exc})") from None
        return TagFilter("semver", pattern)
    if prefix in ("regex", "regexp"):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"tag filter {text!r}: invalid regular expression ({exc})") from None
        return TagFilter("regex", pattern)
    return TagFilter("glob", pattern)


def newest_by_version(tags: Iterable[str], tag_filter: TagFilter) -> list[str]:
    """Tags the semver filter allows, newest version first (ties: the tag without `v` first)."""
    versioned = [
        (version, tag)
        for tag in tags
        if tag_filter.matches(tag) and (version := tag_version(tag)) is not None
    ]
    versioned.sort(key=lambda item: (item[0], not item[1].startswith("v")), reverse=True)
    return [tag for _, tag in versioned]
