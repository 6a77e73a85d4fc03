"""list-images: per workload and container, the running image and the tags it could run.

Used by the REST API and `gitopsctl list-images`. Tags come from the registry tag cache, newest
first: by version for semver filters, by image created time otherwise (tags whose created time
is not cached yet come last).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gitops_pipeline.manifests.workloads import container_images, workload_annotations
from gitops_pipeline.policy.annotations import read_policy
from gitops_pipeline.policy.filters import TagFilter, newest_by_version
from gitops_pipeline.registry.cache import TagCache
from gitops_pipeline.registry.reference import InvalidReference, parse_image


@dataclass(frozen=True)
class TagInfo:
    tag: str
    digest: str | None
    created: datetime | None
    running: bool


@dataclass(frozen=True)
class ContainerImages:
    workload: str
    container: str
    image: str
    filter: str
    tags: list[TagInfo]


def _tags(
    cache: TagCache, repo: str, tag_filter: TagFilter, running: str | None, limit: int | None
) -> list[TagInfo]:
    """The repository's cached tags the filter allows, newest first."""
    cached = cache.get_tags(repo)
    allowed = (
        newest_by_version(cached, tag_filter)
        if tag_filter.orders_by_version
        else tag_filter.select(cached)
    )
    infos = cache.images(digest for tag in allowed if (digest := cached[tag]))

    def created(tag: str) -> datetime | None:
        digest = cached[tag]
        info = infos.get(digest) if digest else None
        return info.created if info else None

    if not tag_filter.orders_by_version:
        allowed.sort(
            key=lambda tag: (c.timestamp() if (c := created(tag)) else float("-inf"), tag),
            reverse=True,
        )
    shown = allowed[:limit] if limit else allowed
    return [TagInfo(tag, cached[tag], created(tag), running=tag == running) for tag in shown]


def list_images(
    objects: list[dict[str, Any]],
    default_namespace: str,
    cache: TagCache,
    workload: str | None = None,
    limit: int | None = None,
) -> list[ContainerImages]:
    """Every container of the workloads in `objects` (or of one `workload`) with its tags."""
    annotations = workload_annotations(objects, default_namespace)
    listings: list[ContainerImages] = []
    for item in container_images(objects, default_namespace):
        if workload is not None and item.workload != workload:
            continue
        tag_filter = read_policy(annotations.get(item.workload, {})).filter_for(item.container)
        try:
            ref = parse_image(item.image)
        except InvalidReference:
            listings.append(ContainerImages(item.workload, item.container, item.image,
                                            str(tag_filter), []))  # fmt: skip
            continue
        tags = _tags(cache, ref.name, tag_filter, ref.tag, limit)
        listings.append(
            ContainerImages(item.workload, item.container, item.image, str(tag_filter), tags)
        )
    return listings
