"""The Redis connection and the operator's key space (prefix configurable, default `gp:`)."""

from __future__ import annotations

from typing import cast

import redis

from gitops_pipeline.errors import ConfigError

SOCKET_TIMEOUT = 10.0
CONNECT_TIMEOUT = 3.0


def connect(url: str) -> redis.Redis:
    """A client with timeouts on every call; responses decoded as text."""
    return redis.Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
        health_check_interval=30,
        decode_responses=True,
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

    def artifact(self, digest: str) -> str:
        return f"{self.prefix}artifact:{digest}"

    def events(self, pipeline: str) -> str:
        return f"{self.prefix}events:{pipeline}"
