"""Worker presence on the real Redis: live workers are listed, expired ones are forgotten."""

from __future__ import annotations

import time

import redis

from gitops_pipeline import presence


def test_expired_workers_are_forgotten_and_live_ones_kept(redis_url: str, key_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    presence.announce(client, key_prefix, "live@a", ["sync", "default"], ttl=60)
    presence.announce(client, key_prefix, "gone@b", ["scan"], ttl=1)
    assert [w.hostname for w in presence.seen(client, key_prefix)] == ["gone@b", "live@a"]
    time.sleep(1.5)  # gone@b's key expires
    workers = presence.seen(client, key_prefix)
    assert [(w.hostname, w.queues) for w in workers] == [("live@a", ["default", "sync"])]
    assert client.smembers(presence.index_key(key_prefix)) == {"live@a"}

    presence.announce(client, key_prefix, "gone@b", ["scan"], ttl=60)  # it came back
    assert {w.hostname for w in presence.seen(client, key_prefix)} == {"gone@b", "live@a"}
    presence.withdraw(client, key_prefix, "live@a")
    assert [w.hostname for w in presence.seen(client, key_prefix)] == ["gone@b"]
