"""Tag cache memory benchmark: bytes per cached tag in Redis, against an 80-byte target.

Run with ``python -m bench.tag_cache_memory``. It starts a private ``redis-server`` (from
``gitops_pipeline.testbed``) in a temporary directory, stops it by process id at the end, and
fills it with 1M tags over 5000 repositories, sized like real registries: most repositories
hold tens to a few hundred tags, a few CI-heavy ones thousands (sizes drawn from a log-normal
distribution, scaled to the total). Tag names mix releases (``1.2.3``, ``v1.2.3``), variants
(``1.2.3-alpine``), floating aliases (``1.2``, ``1``, ``latest``, which share their release's
digest) and CI builds (``main-<7 hex>``); digests are random sha256.

Measured, each on an emptied database of the same server:

1. ``TagCache`` as written (packed tags + meta hash per repository): ``MEMORY USAGE ... SAMPLES 0``
   summed over the tags and meta keys, per tag, against the 80-byte target; and the growth of
   ``INFO memory used_memory`` per tag as a second view (includes the key space's own tables
   and the expiry entries).
2. The same with every tag pointing at a distinct digest (nothing to de-duplicate).
3. Baseline: the obvious layout, one Redis hash per repository of tag -> ``sha256:<hex>`` text.
4. Digest records (``reg:digest:<digest>``), per image, for a sample of the images.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import redis

from bench.common import log
from gitops_pipeline.registry.cache import ImageInfo, TagCache
from gitops_pipeline.testbed.redis_server import start_redis

TARGET_BYTES_PER_TAG = 80.0
PREFIX = "gp:"
BATCH = 1000
NOW = 1_700_000_000.0

Repos = dict[str, dict[str, str | None]]


# --- the data ----------------------------------------------------------------------------------


def repo_sizes(rng: random.Random, repos: int, total: int) -> list[int]:
    """Tag counts per repository: log-normal (median ~100, long tail), summing to ``total``."""
    raw = [rng.lognormvariate(0.0, 1.1) for _ in range(repos)]
    scale = total / sum(raw)
    sizes = [max(1, round(value * scale)) for value in raw]
    sizes[sizes.index(max(sizes))] += total - sum(sizes)
    return sizes


def repo_tags(rng: random.Random, count: int, digest: Callable[[], str]) -> dict[str, str | None]:
    """One repository's tags: CI builds, releases with variants, and floating aliases."""
    prefix = rng.choice(["", "", "v"])
    variants = rng.choice([(), (), ("alpine",), ("alpine", "slim")])
    ci_share = rng.choice([0.0, 0.0, 0.3, 0.7])
    tags: dict[str, str | None] = {}
    for _ in range(int(count * ci_share)):
        tags[f"main-{rng.getrandbits(28):07x}"] = digest()
    major, minor, patch = 1, 0, 0
    while len(tags) < count:
        release = digest()
        version = f"{prefix}{major}.{minor}.{patch}"
        tags[version] = release
        for variant in variants:
            tags[f"{version}-{variant}"] = digest()
        tags[f"{prefix}{major}.{minor}"] = release
        tags[f"{prefix}{major}"] = release
        tags["latest"] = release
        roll = rng.random()
        if roll < 0.05:
            major, minor, patch = major + 1, 0, 0
        elif roll < 0.3:
            minor, patch = minor + 1, 0
        else:
            patch += 1
    return dict(list(tags.items())[:count])


def make_repos(seed: int, repos: int, total: int, distinct: bool) -> Repos:
    rng = random.Random(seed)

    def digest() -> str:
        return "sha256:" + rng.randbytes(32).hex()

    made: Repos = {}
    for index, size in enumerate(repo_sizes(rng, repos, total)):
        tags = repo_tags(rng, size, digest)
        if distinct:
            tags = {tag: digest() for tag in tags}
        made[f"registry-{index % 7}.example/team-{index // 50}/app-{index}"] = tags
    return made


# --- measuring ---------------------------------------------------------------------------------


def used_memory(client: redis.Redis) -> int:
    return int(cast(dict[str, Any], client.info("memory"))["used_memory"])


def memory_usage(client: redis.Redis, keys: Iterable[str]) -> int:
    total = 0
    batch = list(keys)
    for start in range(0, len(batch), BATCH):
        pipe = client.pipeline(transaction=False)
        for key in batch[start : start + BATCH]:
            pipe.memory_usage(key, samples=0)
        total += sum(int(size or 0) for size in pipe.execute())
    return total


@dataclass
class Result:
    name: str
    tags: int
    key_bytes: int
    used_memory_delta: int

    @property
    def per_tag(self) -> float:
        return self.key_bytes / self.tags

    @property
    def used_per_tag(self) -> float:
        return self.used_memory_delta / self.tags


def fill_tag_cache(client: redis.Redis, name: str, repos: Repos) -> Result:
    client.flushdb()
    before = used_memory(client)
    cache = TagCache(client, PREFIX)
    for repo, tags in repos.items():
        cache.put_tags(repo, tags)
        cache.record_scan(repo, changed=False, now=NOW)
    delta = used_memory(client) - before
    tags_bytes = memory_usage(client, (f"{PREFIX}reg:tags:{repo}" for repo in repos))
    meta_bytes = memory_usage(client, (f"{PREFIX}reg:meta:{repo}" for repo in repos))
    count = sum(len(tags) for tags in repos.values())
    log(f"{name}: tags keys {tags_bytes / count:.1f} B/tag, meta keys {meta_bytes / count:.1f}")
    return Result(name, count, tags_bytes + meta_bytes, delta)


def fill_hash_baseline(client: redis.Redis, repos: Repos) -> Result:
    client.flushdb()
    before = used_memory(client)
    pipe = client.pipeline(transaction=False)
    for index, (repo, tags) in enumerate(repos.items(), 1):
        pipe.hset(f"{PREFIX}reg:tags:{repo}", mapping={tag: str(d) for tag, d in tags.items()})
        if index % 100 == 0:
            pipe.execute()
    pipe.execute()
    delta = used_memory(client) - before
    key_bytes = memory_usage(client, (f"{PREFIX}reg:tags:{repo}" for repo in repos))
    count = sum(len(tags) for tags in repos.values())
    return Result("baseline: hash of tag -> 'sha256:<hex>'", count, key_bytes, delta)


def digest_records(client: redis.Redis, repos: Repos, sample: int) -> tuple[float, float, int]:
    """Mean bytes per digest record (MEMORY USAGE, used_memory growth) over ``sample`` images."""
    client.flushdb()
    rng = random.Random(7)
    digests = list(
        dict.fromkeys(d for tags in repos.values() for d in tags.values() if d is not None)
    )[:sample]
    cache = TagCache(client, PREFIX)
    before = used_memory(client)
    created = datetime(2024, 1, 1, tzinfo=UTC)
    for digest in digests:
        labels = {}
        if rng.random() < 0.6:  # many images carry the OCI annotations as labels
            labels = {
                "org.opencontainers.image.source": "https://git.example/team/app",
                "org.opencontainers.image.revision": rng.randbytes(20).hex(),
                "org.opencontainers.image.version": f"1.{rng.randrange(40)}.{rng.randrange(20)}",
            }
        when = created + timedelta(seconds=rng.randrange(30_000_000))
        cache.put_image(digest, ImageInfo(created=when, labels=labels))
    delta = used_memory(client) - before
    key_bytes = memory_usage(client, (f"{PREFIX}reg:digest:{d}" for d in digests))
    return key_bytes / len(digests), delta / len(digests), len(digests)


# --- the report --------------------------------------------------------------------------------


def run(repos: int, total: int, sample: int) -> bool:
    workdir = Path(tempfile.mkdtemp(prefix="bench-tag-cache-"))
    server = start_redis(workdir / "redis")
    try:
        client = redis.Redis.from_url(server.url, socket_timeout=60)
        version = cast(dict[str, Any], client.info("server"))["redis_version"]
        log(f"redis-server {version} (pid {server.pid}); generating {total} tags")
        realistic = make_repos(1, repos, total, distinct=False)
        sizes = sorted(len(tags) for tags in realistic.values())
        unique = len({d for tags in realistic.values() for d in tags.values()})
        ours = fill_tag_cache(client, "TagCache (packed tags + meta hash)", realistic)
        baseline = fill_hash_baseline(client, realistic)
        per_image, per_image_used, images = digest_records(client, realistic, sample)
        log("same names, every tag a distinct digest")
        worst = fill_tag_cache(
            client, "TagCache, no shared digests", make_repos(1, repos, total, distinct=True)
        )
        client.close()
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"Tag cache memory, redis-server {version}, {ours.tags} tags in {repos} repositories")
    print(
        f"  tags per repository: min {sizes[0]}, median {statistics.median(sizes):.0f}, "
        f"max {sizes[-1]}; {unique} distinct digests ({ours.tags / unique:.2f} tags/digest)"
    )
    print(f"  {'bytes per tag':<42} {'MEMORY USAGE':>12}  {'used_memory':>12}")
    for result in (ours, worst, baseline):
        print(f"  {result.name:<42} {result.per_tag:12.1f}  {result.used_per_tag:12.1f}")
    verdict = "PASS" if ours.per_tag <= TARGET_BYTES_PER_TAG else "MISS"
    worst_verdict = "PASS" if worst.per_tag <= TARGET_BYTES_PER_TAG else "MISS"
    print(
        f"  target <= {TARGET_BYTES_PER_TAG:.0f} B/tag (MEMORY USAGE of tags+meta keys): "
        f"{ours.per_tag:.1f} {verdict}; no shared digests: {worst.per_tag:.1f} {worst_verdict}"
    )
    print(
        f"  ratio to baseline (hash of hex digests): {ours.per_tag / baseline.per_tag:.2f} "
        f"(used_memory: {ours.used_per_tag / baseline.used_per_tag:.2f})"
    )
    print(
        f"  digest records ({images} images, 60% with 3 OCI labels): "
        f"{per_image:.1f} B/image MEMORY USAGE, {per_image_used:.1f} B/image used_memory delta"
    )
    return verdict == "PASS"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.tag_cache_memory", description="tag cache memory benchmark"
    )
    parser.add_argument("--repos", type=int, default=5000)
    parser.add_argument("--tags", type=int, default=1_000_000, help="total tags")
    parser.add_argument("--images", type=int, default=50_000, help="digest records to sample")
    args = parser.parse_args(argv)
    started = time.monotonic()
    passed = run(args.repos, args.tags, args.images)
    log(f"done in {time.monotonic() - started:.0f}s")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
