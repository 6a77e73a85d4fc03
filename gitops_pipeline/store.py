"""The Redis connection and the operator's key space (prefix configurable, default `gp:`)."""

from __future__ import annotations

from typing import cast

import redis

from gitops_pipeline.errors import ConfigError

SOCKET_TIMEOUT = 10.0
CONNECT_TIMEOUT = 3.0


def connect(url: str) -> redis.Redis:
    """A client with timeouts on every call; responses decoded as text."""
    return _client(url, decode=True)


def connect_binary(url: str) -> redis.Redis:
    """Like `connect`, for values that are bytes (the packed tag cache)."""
    return _client(url, decode=False)


def _client(url: str, *, decode: bool) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
        health_check_interval=30,
        decode_responses=decode,
    )


def check_redis(url: str) -> None:
    """Fail with one line when Redis is unreachable or may evict the broker's and locks' keys."""
    client = connect(url)
    try:
        client.ping()
        reply = cast(dict[str, str], client.config_get("maxmemory-policy"))
        policy = reply.get("maxmemory-policy", "noeviction")
    except redis.exceptions.ResponseError:
        policy = "noeviction"  # CONFIG is disabled on some managed Redis; assume it is set right
    except redis.RedisError as exc:
        raise ConfigError(f"redis_url {url}: Redis is unreachable ({exc})") from None
    finally:
        client.close()
    if policy != "noeviction":
        raise ConfigError(
            f"redis_url {url}: maxmemory-policy is {policy}; the broker and locks need "
            "noeviction (CONFIG SET maxmemory-policy noeviction)"
        )


class Keys:
    """Builds every key the operator writes, so the layout lives in one place."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def sync(self, pipeline: str) -> str:
        return f"{self.prefix}sync:{pipeline}"

    def sync_run(self, pipeline: str) -> str:
        """Set while a sync of the pipeline runs (with a TTL), for coalescing triggers."""
        return f"{self.prefix}sync:{pipeline}:run"

    def sync_pending(self, pipeline: str) -> str:
        return f"{self.prefix}sync:{pipeline}:pending"

    def applied(self, pipeline: str) -> str:
        """ref -> checksum of every object the pipeline applied successfully."""
        return f"{self.prefix}sync:{pipeline}:applied"

    def marker(self, pipeline: str) -> str:
        """The last applied revision when the repository is read-only."""
        return f"{self.prefix}sync:{pipeline}:marker"

    def cluster_lock(self, cluster: str) -> str:
        return f"{self.prefix}lock:cluster:{cluster}"

    def cluster_fence(self, cluster: str) -> str:
        return f"{self.prefix}fence:cluster:{cluster}"

    def artifact(self, digest: str) -> str:
        return f"{self.prefix}artifact:{digest}"

    def events(self, pipeline: str) -> str:
        return f"{self.prefix}events:{pipeline}"
