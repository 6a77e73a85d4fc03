"""Policy changes as `gitopsctl automate/deautomate/lock/unlock/policy` ask for them.

A change is checked where it is asked for (the API refuses an invalid filter before anything is
queued), and turned into policy values per workload when it is written (`--tag-all` needs the
workload's container names). A filter of `*` (glob, the default) removes the annotation.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gitops_pipeline.policy.filters import parse_filter

_DEFAULT_FILTERS = ("*", "glob:*")
_CONTAINER_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
"""Kubernetes container names are DNS-1123 labels; the annotation key embeds the name."""


@dataclass(frozen=True)
class PolicyUpdate:
    automate: bool | None = None
    """True automates, False deautomates, None leaves it."""
    lock: bool | None = None
    user: str = ""
    """Who locked (with `lock`), as `fluxcd.io/locked_user`."""
    message: str = ""
    """Why (with `lock`), as `fluxcd.io/locked_msg`."""
    tag_all: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    """container -> tag filter."""

    def check(self) -> None:
        """Raise ValueError naming what is wrong: an invalid filter, or nothing to change."""
        for container in self.tags:
            if not _CONTAINER_NAME.fullmatch(container):
                raise ValueError(
                    f"--tag needs container=filter, and {container!r} is not a container name "
                    "(lower-case letters, digits and '-', at most 63)"
                )
        for container, text in [*self.tags.items(), ("(all)", self.tag_all)]:
            if text is None:
                continue
            try:
                parse_filter(text)
            except ValueError as exc:
                raise ValueError(f"container {container}: {exc}") from None
        if self.automate is None and self.lock is None and self.tag_all is None and not self.tags:
            raise ValueError("no policy change given")

    def values(self, containers: Iterable[str]) -> dict[str, str | None]:
        """Policy values to set (None removes) for a workload with `containers`."""
        self.check()
        values: dict[str, str | None] = {}
        if self.automate is not None:
            values["automated"] = "true" if self.automate else None
        if self.lock is True:
            values.update(
                locked="true", locked_user=self.user or None, locked_msg=self.message or None
            )
        elif self.lock is False:
            values.update(locked=None, locked_user=None, locked_msg=None)
        filters = dict.fromkeys(containers, self.tag_all) if self.tag_all is not None else {}
        filters.update(self.tags)
        for container, text in filters.items():
            assert text is not None
            values[f"tag.{container}"] = None if text.strip() in _DEFAULT_FILTERS else text.strip()
        return values

    def summary(self) -> str:
        """A commit subject in Flux v1's words (`Automated`, `Locked`, ...)."""
        words = []
        if self.automate is not None:
            words.append("Automated" if self.automate else "Deautomated")
        if self.lock is not None:
            words.append("Locked" if self.lock else "Unlocked")
        if self.tag_all is not None or self.tags:
            words.append("Updated tag filters")
        return ", ".join(words)
