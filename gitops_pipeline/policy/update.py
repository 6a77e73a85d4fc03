"""Which tag an automated container should move to, given its filter and the known tags."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from gitops_pipeline.policy.filters import TagFilter, newest_by_version, tag_version


@dataclass(frozen=True)
class Choice:
    """The tag to move to (None: stay), and why not when a container was skipped."""

    tag: str | None
    warning: str | None = None


def choose_tag(
    tag_filter: TagFilter, current: str | None, created: Mapping[str, datetime | None]
) -> Choice:
    """The newest tag `tag_filter` allows, if it is newer than `current`.

    `created` maps every known tag to its image's created time (None when unknown). Semver
    filters order by version and never move to an older version; the others order by created
    time, and skip the container (with a warning, as Flux v1 did) when the current image or the
    best candidate has no created time.
    """
    if tag_filter.orders_by_version:
        ordered = newest_by_version(created, tag_filter)
        if not ordered or ordered[0] == current:
            return Choice(None)
        best, now = tag_version(ordered[0]), tag_version(current) if current else None
        if (
            now is not None
            and tag_filter.matches(current or "")
            and best is not None
            and best <= now
        ):
            return Choice(None)
        return Choice(ordered[0])
    allowed = [tag for tag in tag_filter.select(created) if created[tag] is not None]
    if not allowed:
        return Choice(None)
    best = max(allowed, key=lambda tag: (created[tag], tag))
    if best == current:
        return Choice(None)
    current_created = created.get(current) if current else None
    if current_created is None:
        return Choice(
            None, f"skipped: the running image's tag {current!r} has no known created time"
        )
    best_created = created[best]
    assert best_created is not None  # `allowed` holds only tags with a created time
    if best_created <= current_created:
        return Choice(None)
    return Choice(best)
