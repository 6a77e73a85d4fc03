"""One scan pass of one image repository: list tags, fetch only the manifests needed.

Semver-ordered policies need just the tag list plus the digest of the tag they would pick;
created-time ordering needs the digest and config of candidate tags. A config is fetched once
per digest, ever (a digest's config cannot change). Known tags keep their cached digests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from gitops_pipeline.registry.cache import ImageInfo, TagCache
from gitops_pipeline.registry.client import RegistryClient

# Given the listed tags, the ones whose digest (and config) the policies need.
NeedsImage = Callable[[list[str]], Iterable[str]]


@dataclass
class ScanResult:
    """What one scan pass did. Of the tags the policies needed, ``cache_hits`` had their digest
    and image record (created time, labels) in the cache already (at most a HEAD to see whether
    the tag moved); ``cache_misses`` needed their manifest or config fetched."""

    repo: str
    tags: int = 0
    new_tags: list[str] = field(default_factory=list)
    resolved: int = 0
    configs: int = 0
    changed: bool = False
    digests_moved: bool = False
    cache_hits: int = 0
    cache_misses: int = 0


def scan_repository(
    client: RegistryClient,
    cache: TagCache,
    repo: str,
    repository: str,
    needs_image: NeedsImage,
    now: float,
) -> ScanResult:
    """Scan `repository` (its path at the registry) into the cache entry `repo`.

    On any registry error the tags resolved so far are kept, the error is recorded in the
    repository's scan state, and the exception propagates for the caller to report.
    """
    result = ScanResult(repo)
    old = cache.get_tags(repo)
    try:
        tags = client.list_tags(repository)
    except Exception as exc:
        cache.record_scan(repo, changed=False, now=now, error=str(exc))
        raise
    merged: dict[str, str | None] = {tag: old.get(tag) for tag in tags}
    result.tags = len(tags)
    result.new_tags = [tag for tag in tags if tag not in old] if old else []
    # What is known about the digests already cached, in one round trip.
    known = set(cache.images(digest for digest in merged.values() if digest))
    check_digests = cache.digests_due(repo, now)
    digests_moved = False
    try:
        for tag in needs_image(tags):
            digest = merged.get(tag)
            if digest is not None and check_digests:
                current = client.digest(repository, tag)  # one HEAD: has the tag moved?
                result.resolved += 1
                if current != digest:
                    merged[tag] = digest = current
                    digests_moved = True
            if digest is not None and digest in known:
                result.cache_hits += 1
                continue
            result.cache_misses += 1
            if digest is None:
                resolved = client.resolve(repository, tag)
                merged[tag] = digest = resolved.digest
                result.resolved += 1
                config_digest = resolved.config_digest
            else:
                config_digest = None
            if digest in known:
                continue
            if config_digest is None:
                config_digest = client.resolve(repository, digest).config_digest
                result.resolved += 1
            if config_digest is not None:
                config = client.image_config(repository, config_digest)
                cache.put_image(digest, ImageInfo(config.created, config.labels))
                known.add(digest)
                result.configs += 1
    except Exception as exc:
        cache.put_tags(repo, merged)  # what was learnt before the failure is kept
        cache.record_scan(repo, changed=bool(result.new_tags), now=now, error=str(exc))
        raise
    result.changed = cache.put_tags(repo, merged)
    cache.record_scan(repo, changed=result.changed, now=now)
    if check_digests or not cache.meta_has_digest_schedule(repo):
        cache.record_digest_check(repo, changed=digests_moved if check_digests else None, now=now)
    result.digests_moved = digests_moved
    return result
