"""Fenced locks on the real Redis: one holder at a time, stale holders cannot pass a check."""

from __future__ import annotations

import time

import pytest
import redis

from gitops_pipeline.locks import FencedLock, LockBusy, LockLost


def _lock(url: str, ttl: float = 5.0) -> FencedLock:
    client = redis.Redis.from_url(url, decode_responses=True)
    return FencedLock(client, "t:lock:cluster:c1", "t:fence:cluster:c1", ttl)


def test_second_writer_is_refused_while_the_first_holds(redis_url: str) -> None:
    first, second = _lock(redis_url), _lock(redis_url)
    with first:
        with pytest.raises(LockBusy):
            second.acquire()
        first.check()
    token = second.acquire()
    assert token == first.token + 1
    second.release()


def test_tokens_only_grow(redis_url: str) -> None:
    tokens = []
    for _ in range(5):
        with _lock(redis_url) as lock:
            tokens.append(lock.token)
    assert tokens == sorted(tokens)
    assert len(set(tokens)) == 5


def test_renewal_keeps_a_long_holder_valid(redis_url: str) -> None:
    with _lock(redis_url, ttl=0.6) as lock:
        time.sleep(1.5)  # several TTLs: only the background renewal keeps the lock alive
        lock.check()


def test_stale_holder_fails_the_check_after_takeover(redis_url: str) -> None:
    stale = _lock(redis_url, ttl=0.3)
    stale.acquire()
    stale._stop.set()  # simulate a paused process: no more renewals
    time.sleep(0.6)
    newer = _lock(redis_url)
    newer.acquire()
    with pytest.raises(LockLost, match="fencing token 1 is stale"):
        stale.check()
    newer.check()
    stale.release()  # must not release the newer holder's lock
    newer.check()
    newer.release()


def test_expired_lock_fails_the_check_even_without_a_new_holder(redis_url: str) -> None:
    lock = _lock(redis_url, ttl=0.3)
    lock.acquire()
    lock._stop.set()
    time.sleep(0.6)
    with pytest.raises(LockLost):
        lock.check()
