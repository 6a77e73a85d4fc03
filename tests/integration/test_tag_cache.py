"""The registry tag cache and scan schedule on the real Redis."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import cast

import pytest
import redis

from gitops_pipeline.registry.cache import ImageInfo, RefreshPolicy, TagCache

REPO = "docker.io/library/nginx"
T0 = 1_700_000_000.0


def _digest(seed: str) -> str:
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
def cache(client: redis.Redis, key_prefix: str) -> TagCache:
    return TagCache(client, key_prefix)


# --- tags --------------------------------------------------------------------------------------


def test_tags_round_trip_with_and_without_digests(cache: TagCache) -> None:
    shared = _digest("1.25")
    tags: dict[str, str | None] = {
        "1.25.3": shared,
        "1.25": shared,
        "latest": shared,
        "1.25.3-alpine": _digest("alpine"),
        "main-3f9a0c1": "sha512:" + hashlib.sha512(b"x").hexdigest(),
        "1.24.0": None,
        "_under.score-ok": None,
    }
    assert cache.get_tags(REPO) == {}
    assert cache.put_tags(REPO, tags) is True
    assert cache.get_tags(REPO) == tags

    names_only = dict.fromkeys(["1.0.0", "1.1.0", "2.0.0-rc.1"])
    cache.put_tags("ghcr.io/org/app", names_only)
    assert cache.get_tags("ghcr.io/org/app") == names_only

    cache.put_tags("quay.io/empty/repo", {})
    assert cache.get_tags("quay.io/empty/repo") == {}
    meta = cache.meta("quay.io/empty/repo")
    assert meta is not None
    assert meta.tags == 0


def test_many_distinct_digests_use_wider_indexes(cache: TagCache) -> None:
    tags: dict[str, str | None] = {f"build-{i}": _digest(str(i)) for i in range(70_000)}
    tags["pending"] = None
    cache.put_tags(REPO, tags)
    assert cache.get_tags(REPO) == tags


def test_put_tags_replaces_the_whole_map_and_reports_changes(cache: TagCache) -> None:
    first: dict[str, str | None] = {"1.0": _digest("a"), "1.1": _digest("b")}
    second: dict[str, str | None] = {"1.1": _digest("c"), "2.0": None}
    assert cache.put_tags(REPO, first) is True
    assert cache.put_tags(REPO, dict(reversed(first.items()))) is False  # same map, same bytes
    assert cache.put_tags(REPO, second) is True
    assert cache.get_tags(REPO) == second  # "1.0" is gone, not merged
    meta = cache.meta(REPO)
    assert meta is not None
    assert meta.tags == 2


def test_readers_never_see_a_half_written_map(
    cache: TagCache, redis_url: str, key_prefix: str
) -> None:
    maps: list[dict[str, str | None]] = [
        {f"v{i}.0.{n}": _digest(f"{i}-{n}") for n in range(300)} for i in range(2)
    ]
    stop = threading.Event()
    seen: list[bool] = []

    def read() -> None:
        reader = TagCache(redis.Redis.from_url(redis_url), key_prefix)
        while not stop.is_set():
            seen.append(reader.get_tags(REPO) in maps)

    cache.put_tags(REPO, maps[0])
    thread = threading.Thread(target=read)
    thread.start()
    try:
        for round_ in range(200):
            cache.put_tags(REPO, maps[round_ % 2])
    finally:
        stop.set()
        thread.join(timeout=10)
    assert seen
    assert all(seen)


@pytest.mark.parametrize("bad", ["", "-leading-dash", "has space", "new\nline", "x" * 129])
def test_invalid_tags_are_refused(cache: TagCache, bad: str) -> None:
    with pytest.raises(ValueError, match="not a valid image tag"):
        cache.put_tags(REPO, {bad: None})


def test_invalid_digest_is_refused(cache: TagCache) -> None:
    with pytest.raises(ValueError, match="not a valid digest"):
        cache.put_tags(REPO, {"1.0": "sha256:NOT HEX"})


def test_a_decoding_client_is_refused(redis_url: str, key_prefix: str) -> None:
    with pytest.raises(ValueError, match="decode_responses=False"):
        TagCache(redis.Redis.from_url(redis_url, decode_responses=True), key_prefix)


def test_a_repository_of_200_tags_costs_under_80_bytes_per_tag(
    cache: TagCache, client: redis.Redis, key_prefix: str
) -> None:
    tags: dict[str, str | None] = {f"1.{i // 10}.{i % 10}": _digest(str(i)) for i in range(200)}
    cache.put_tags(REPO, tags)
    cache.record_scan(REPO, changed=True, now=T0)
    used = sum(
        cast(int, client.memory_usage(f"{key_prefix}reg:{kind}:{REPO}", samples=0))
        for kind in ("tags", "meta")
    )
    assert used / len(tags) < 80


# --- digest records ----------------------------------------------------------------------------


def test_digest_records_are_written_once(cache: TagCache) -> None:
    digest = _digest("image")
    created = datetime(2024, 3, 1, 12, 30, 15, 123000, tzinfo=UTC)
    first = ImageInfo(created=created, labels={"org.opencontainers.image.revision": "abc"})
    assert cache.get_image(digest) is None
    assert cache.put_image(digest, first) is True
    assert cache.put_image(digest, ImageInfo(created=None, labels={"other": "x"})) is False
    assert cache.get_image(digest) == first


def test_images_reads_many_records_at_once(cache: TagCache, client: redis.Redis) -> None:
    bare, labelled, missing = _digest("bare"), _digest("labelled"), _digest("missing")
    cache.put_image(bare, ImageInfo())
    cache.put_image(labelled, ImageInfo(labels={"maintainer": "ops"}))
    found = cache.images([bare, labelled, missing, bare])
    assert found == {bare: ImageInfo(), labelled: ImageInfo(labels={"maintainer": "ops"})}
    assert client.get(f"{cache.prefix}reg:digest:{bare}") == b"{}"  # empty fields are omitted


def test_naive_created_times_are_refused(cache: TagCache) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        cache.put_image(_digest("x"), ImageInfo(created=datetime(2024, 1, 1)))


# --- adaptive refresh --------------------------------------------------------------------------


def test_unchanged_scans_double_the_interval_up_to_the_maximum(cache: TagCache) -> None:
    intervals = []
    now = T0
    for _ in range(7):
        meta = cache.record_scan(REPO, changed=False, now=now)
        intervals.append(meta.interval)
        assert meta.next_due == pytest.approx(now + meta.interval)
        assert meta.scanned_at == pytest.approx(now)
        now += meta.interval
    assert intervals == [300, 600, 1200, 2400, 3600, 3600, 3600]


def test_changed_scans_halve_the_interval_down_to_the_minimum(cache: TagCache) -> None:
    cache.record_scan(REPO, changed=True, now=T0)  # first scan: the initial interval
    intervals = [cache.record_scan(REPO, changed=True, now=T0 + i).interval for i in range(1, 5)]
    assert intervals == [150, 75, 60, 60]


def test_a_failed_scan_keeps_tags_records_the_error_and_backs_off(cache: TagCache) -> None:
    tags: dict[str, str | None] = {"1.0": _digest("a")}
    cache.put_tags(REPO, tags)
    cache.record_scan(REPO, changed=False, now=T0)
    cache.record_scan(REPO, changed=False, now=T0 + 300)  # interval now 600

    retries = []
    for failure in range(6):
        now = T0 + 1000 + failure
        meta = cache.record_scan(REPO, changed=False, now=now, error="registry said 503")
        assert meta.error == "registry said 503"
        assert meta.error_at == pytest.approx(now)
        assert meta.failures == failure + 1
        assert meta.interval == 600
        assert meta.scanned_at == pytest.approx(T0 + 300)  # the last good scan
        assert meta.next_due is not None
        retries.append(round(meta.next_due - now))
    assert retries == [30, 60, 120, 240, 480, 600]  # doubling, never later than the interval
    assert cache.get_tags(REPO) == tags

    recovered = cache.record_scan(REPO, changed=False, now=T0 + 2000)
    assert (recovered.error, recovered.error_at, recovered.failures) == (None, None, 0)
    assert recovered.interval == 1200


def test_a_custom_policy_is_validated() -> None:
    with pytest.raises(ValueError, match="minimum <= initial <= maximum"):
        RefreshPolicy(initial=30, minimum=60)


def test_due_lists_never_scanned_and_overdue_repositories(cache: TagCache) -> None:
    repos = ["a.io/x", "b.io/y", "c.io/z"]
    assert cache.due(repos, T0) == repos
    cache.record_scan("b.io/y", changed=False, now=T0)  # next due at T0 + 300
    assert cache.due(repos, T0 + 299) == ["a.io/x", "c.io/z"]
    assert cache.due(repos, T0 + 300) == repos
    assert cache.due([], T0) == []


# --- leases and dispatch -----------------------------------------------------------------------


def test_claim_is_exclusive_across_clients(redis_url: str, key_prefix: str) -> None:
    first = TagCache(redis.Redis.from_url(redis_url), key_prefix)
    second = TagCache(redis.Redis.from_url(redis_url), key_prefix)
    assert first.claim(REPO, "scanner-1", ttl=0.3)
    assert not second.claim(REPO, "scanner-2", ttl=5)
    assert not second.release(REPO, "scanner-2")  # not its lease
    assert first.release(REPO, "scanner-1")
    assert second.claim(REPO, "scanner-2", ttl=0.2)
    assert second.claim("other.io/repo", "scanner-2", ttl=5)  # leases are per repository


def test_an_abandoned_claim_expires(cache: TagCache) -> None:
    assert cache.claim(REPO, "crashed", ttl=0.2)
    assert not cache.claim(REPO, "scanner", ttl=5)
    threading.Event().wait(0.4)
    assert cache.claim(REPO, "scanner", ttl=5)


def test_try_dispatch_lets_exactly_one_racer_win_each_period(
    redis_url: str, key_prefix: str
) -> None:
    rounds, lease = 50, 60.0
    barrier = threading.Barrier(2)
    wins: list[list[int]] = [[0] * rounds, [0] * rounds]

    def race(racer: int) -> None:
        cache = TagCache(redis.Redis.from_url(redis_url), key_prefix)
        for round_ in range(rounds):
            barrier.wait(timeout=10)
            if cache.try_dispatch(REPO, T0 + round_ * 100, lease):  # a new period each round
                wins[racer][round_] += 1

    threads = [threading.Thread(target=race, args=(racer,)) for racer in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [a + b for a, b in zip(*wins, strict=True)] == [1] * rounds


def test_a_dispatched_repository_is_not_due_until_scanned_or_the_lease_ends(
    cache: TagCache,
) -> None:
    assert cache.try_dispatch(REPO, T0, lease=120)
    assert not cache.try_dispatch(REPO, T0 + 1, lease=120)  # another pipeline's tick
    assert cache.due([REPO], T0 + 60) == []
    meta = cache.meta(REPO)
    assert meta is not None
    assert (meta.dispatched_at, meta.scanned_at) == (T0, None)

    cache.record_scan(REPO, changed=True, now=T0 + 10)  # the scan finished: due in 300 s
    assert not cache.try_dispatch(REPO, T0 + 200, lease=120)
    assert cache.try_dispatch(REPO, T0 + 310, lease=120)
    # the scan got lost: after the lease the repository is due again
    assert cache.due([REPO], T0 + 430) == [REPO]
    assert cache.try_dispatch(REPO, T0 + 430, lease=120)
