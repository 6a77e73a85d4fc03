"""The shared registry rate limit on the real Redis.

Nothing here asserts speed: the bounds are what the algorithm must do (a lower bound on the
waits it imposes, a ceiling on requests in any one-second window), with room for a slow machine.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis

from gitops_pipeline.registry.ratelimit import RateLimiter, RateLimitTimeout

HOST = "registry.test:5000"


@pytest.fixture
def clients(redis_url: str) -> Iterator[list[redis.Redis]]:
    """Separate connections, standing in for separate scanner processes."""
    made = [redis.Redis.from_url(redis_url, decode_responses=i % 2 == 1) for i in range(3)]
    try:
        yield made
    finally:
        for client in made:
            client.close()


def _limiter(client: redis.Redis, prefix: str, **options: float) -> RateLimiter:
    return RateLimiter(client, prefix, 100.0, 50, {HOST: (20.0, 5)}, **options)


def test_hosts_get_their_own_or_the_default_limits(clients: list[redis.Redis]) -> None:
    limiter = _limiter(clients[0], "t:")
    assert limiter.limits(HOST) == (20.0, 5)
    assert limiter.limits(HOST.upper()) == (20.0, 5)
    assert limiter.limits("other.test") == (100.0, 50)
    assert limiter.rate(HOST) == 20.0


def test_sequential_acquires_wait_as_the_rate_requires(
    clients: list[redis.Redis], key_prefix: str
) -> None:
    limiter = _limiter(clients[0], key_prefix)
    waits = [limiter.acquire(HOST, timeout=10) for _ in range(25)]
    assert waits[:5] == [0.0] * 5  # the burst goes at once
    stats = limiter.waits(HOST)
    assert stats.count == 20
    # 20 requests past the burst at 20 per second cannot all have gone in under a second.
    assert stats.seconds >= 0.9
    assert stats.seconds == pytest.approx(sum(waits), abs=1e-3)


def test_processes_sharing_a_host_never_exceed_its_rate(
    clients: list[redis.Redis], key_prefix: str
) -> None:
    granted: list[float] = []
    lock = threading.Lock()

    def scanner(client: redis.Redis) -> None:
        limiter = _limiter(client, key_prefix)
        for _ in range(30):
            limiter.acquire(HOST, timeout=30)
            with lock:
                granted.append(time.monotonic())

    threads = [threading.Thread(target=scanner, args=(client,)) for client in clients[:2]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(granted) == 60
    granted.sort()
    busiest = max(
        sum(1 for moment in granted if start <= moment < start + 1.0) for start in granted
    )
    assert busiest <= 20 + 5
    # 55 requests past the burst at 20 per second span at least 2.75 s, whoever sent them.
    assert granted[-1] - granted[0] >= 2.7


def test_penalize_halves_the_rate_and_blocks_every_process(
    clients: list[redis.Redis], key_prefix: str
) -> None:
    hit, other = _limiter(clients[0], key_prefix), _limiter(clients[1], key_prefix)
    assert hit.penalize(HOST, retry_after=0.5) == pytest.approx(10.0, rel=1e-3)
    assert other.rate(HOST) == pytest.approx(10.0, rel=1e-3)

    with pytest.raises(RateLimitTimeout, match=r"registry registry\.test:5000") as raised:
        other.acquire(HOST, timeout=0.1)  # fails at once: the block is longer than the timeout
    assert 0.3 < raised.value.delay <= 0.5

    assert other.acquire(HOST, timeout=5) >= 0.4
    # After the block there is no burst: requests go one interval (0.1 s at 10/s) apart.
    later = [other.acquire(HOST, timeout=5) for _ in range(3)]
    assert sum(later) >= 0.25


def test_a_429_during_a_block_extends_it_without_halving_again(
    clients: list[redis.Redis], key_prefix: str
) -> None:
    limiter = _limiter(clients[0], key_prefix)
    assert limiter.penalize(HOST, retry_after=0.3) == pytest.approx(10.0, rel=1e-3)
    assert limiter.penalize(HOST, retry_after=0.6) == pytest.approx(10.0, rel=1e-3)
    assert limiter.acquire(HOST, timeout=5) >= 0.5
    assert limiter.penalize(HOST, retry_after=0) == pytest.approx(5.0, rel=1e-2)


def test_the_rate_never_drops_below_the_floor(clients: list[redis.Redis], key_prefix: str) -> None:
    limiter = _limiter(clients[0], key_prefix)
    rates = [limiter.penalize(HOST, retry_after=0) for _ in range(12)]
    assert rates[-1] == pytest.approx(0.1, rel=1e-2)
    assert min(rates) >= 0.1


def test_the_rate_climbs_back_gradually(clients: list[redis.Redis], key_prefix: str) -> None:
    # +10% of the configured 20/s per 0.5 s: +4/s per second, back to 20 within 2.5 s.
    limiter = _limiter(clients[0], key_prefix, recovery_period=0.5)
    observer = _limiter(clients[1], key_prefix, recovery_period=0.5)
    before = time.monotonic()
    limiter.penalize(HOST, retry_after=0)
    after = time.monotonic()
    time.sleep(0.5)
    asked = time.monotonic()
    partway = observer.rate(HOST)
    answered = time.monotonic()
    assert 10 + 4 * (asked - after) - 0.01 <= partway <= min(20, 10 + 4 * (answered - before))
    assert partway > 11.9
    time.sleep(2.6)
    assert observer.rate(HOST) == 20.0


def test_a_recovered_host_is_not_held_back_by_its_slow_past(
    clients: list[redis.Redis], key_prefix: str
) -> None:
    # Down to the floor (0.1/s: one request per 10 s), then recovered within about 1 s.
    limiter = _limiter(clients[0], key_prefix, recovery_period=0.1)
    for _ in range(12):
        limiter.penalize(HOST, retry_after=0)
    time.sleep(1.2)
    assert limiter.rate(HOST) == 20.0
    waited = sum(limiter.acquire(HOST, timeout=2) for _ in range(10))
    assert waited < 2


def test_invalid_limits_are_refused(clients: list[redis.Redis]) -> None:
    with pytest.raises(ValueError, match=r"rate limit of bad\.test"):
        RateLimiter(clients[0], "t:", 10.0, 5, {"bad.test": (0.0, 5)})
    with pytest.raises(ValueError, match="rate limit of default"):
        RateLimiter(clients[0], "t:", 10.0, 0)
