"""Workload policies from annotations (`fluxcd.io/...`, and Flux v1's legacy
`flux.weave.works/...` prefix): automated, locked, and a tag filter per container."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gitops_pipeline.policy.filters import TagFilter, parse_filter

PREFIXES = ("fluxcd.io/", "flux.weave.works/")
DEFAULT_FILTER = TagFilter("glob", "*")


@dataclass(frozen=True)
class Policy:
    automated: bool = False
    locked: bool = False
    locked_user: str = ""
    locked_msg: str = ""
    filters: Mapping[str, TagFilter] = field(default_factory=dict)
    errors: tuple[str, ...] = ()  # filters that did not parse, each a clear message

    def filter_for(self, container: str) -> TagFilter:
        return self.filters.get(container, DEFAULT_FILTER)


def _flag(annotations: Mapping[str, str], name: str) -> bool:
    return any(str(annotations.get(p + name, "")).lower() == "true" for p in PREFIXES)


def _value(annotations: Mapping[str, str], name: str) -> str:
    for prefix in PREFIXES:
        if prefix + name in annotations:
            return str(annotations[prefix + name])
    return ""


def read_policy(annotations: Mapping[str, str]) -> Policy:
    """The policy a workload's annotations state; bad filters are reported, not ignored."""
    filters: dict[str, TagFilter] = {}
    errors: list[str] = []
    for key, value in annotations.items():
        container = None
        for prefix in PREFIXES:
            if key.startswith(prefix + "tag."):
                container = key.removeprefix(prefix + "tag.")
        if key.startswith("filter.fluxcd.io/"):
            container = key.removeprefix("filter.fluxcd.io/")
        if not container:
            continue
        try:
            filters[container] = parse_filter(str(value))
        except ValueError as exc:
            errors.append(f"container {container}: {exc}")
    return Policy(
        automated=_flag(annotations, "automated"),
        locked=_flag(annotations, "locked"),
        locked_user=_value(annotations, "locked_user"),
        locked_msg=_value(annotations, "locked_msg"),
        filters=filters,
        errors=tuple(errors),
    )
