"""Which workers are alive: each one refreshes `<prefix>worker:<hostname>` while it consumes.

A worker writes its key every `INTERVAL` seconds with a `TTL` a few intervals long, so a worker
that died (or whose event loop is stuck) disappears within `TTL` seconds without anyone cleaning
up after it. A set, `<prefix>workers`, indexes the hostnames so readers never scan the keyspace;
hostnames whose key expired are dropped from it when read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

import redis

INTERVAL = 10.0
TTL = 30


@dataclass(frozen=True)
class Worker:
    hostname: str
    queues: list[str]
    seen_at: float
    """Unix time of the worker's last announcement, by the worker's clock."""


_FORGET_GONE = """
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('SREM', KEYS[1], ARGV[i - 1])
  end
end
return 0
"""


def worker_key(prefix: str, hostname: str) -> str:
    return f"{prefix}worker:{hostname}"


def index_key(prefix: str) -> str:
    return f"{prefix}workers"


def announce(
    client: redis.Redis, prefix: str, hostname: str, queues: Iterable[str], ttl: int = TTL
) -> None:
    record = {"hostname": hostname, "queues": sorted(queues), "seen_at": round(time.time(), 3)}
    with client.pipeline() as pipe:
        pipe.set(worker_key(prefix, hostname), json.dumps(record), ex=ttl)
        pipe.sadd(index_key(prefix), hostname)
        pipe.execute()


def withdraw(client: redis.Redis, prefix: str, hostname: str) -> None:
    """Forget a worker that stops cleanly, so readiness reflects it at once."""
    with client.pipeline() as pipe:
        pipe.delete(worker_key(prefix, hostname))
        pipe.srem(index_key(prefix), hostname)
        pipe.execute()


def seen(client: redis.Redis, prefix: str) -> list[Worker]:
    """The workers that announced themselves within their TTL, by hostname."""
    hostnames = sorted(cast(set[str], client.smembers(index_key(prefix))))
    if not hostnames:
        return []
    records = cast(list[str | None], client.mget([worker_key(prefix, h) for h in hostnames]))
    gone = [host for host, raw in zip(hostnames, records, strict=True) if raw is None]
    if gone:
        # Atomically, so a worker that announced itself again meanwhile stays listed.
        keys = [index_key(prefix), *(worker_key(prefix, host) for host in gone)]
        client.eval(_FORGET_GONE, len(keys), *keys, *gone)
    workers = []
    for raw in records:
        if raw is not None:
            data = json.loads(raw)
            workers.append(Worker(data["hostname"], list(data["queues"]), float(data["seen_at"])))
    return workers
