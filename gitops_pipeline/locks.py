"""Cluster and repository locks in Redis, with fencing tokens.

The lock keeps two writers from working at once most of the time; correctness comes from the
fencing token: every lock grant takes the next value of a counter that never goes down, and a
writer checks (atomically, in Lua) that its token is still the newest and its lock still held
before each batch of writes. A writer that paused past its lock's TTL finds a newer token and
stops without writing. redis-py's own `Lock` has no fencing tokens, hence this module.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from dataclasses import dataclass, field
from typing import cast

import redis

from gitops_pipeline.errors import TransientError

_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local token = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[1] .. ':' .. token, 'PX', ARGV[2])
  return token
end
return 0
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_CHECK = """
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[2] then
  return 1
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LockBusy(TransientError):
    """Another writer holds the lock; try again later."""


class LockLost(TransientError):
    """The lock expired or was taken over: a newer fencing token exists. Nothing was written."""


@dataclass
class FencedLock:
    """One grant of a lock: its key, fencing token and owner value, renewed in the background."""

    client: redis.Redis
    key: str
    fence_key: str
    ttl: float
    token: int = 0
    value: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)
    _renewer: threading.Thread | None = None

    @property
    def _ttl_ms(self) -> str:
        return str(int(self.ttl * 1000))

    def acquire(self) -> int:
        """Take the lock and a new fencing token, or raise `LockBusy`."""
        owner = secrets.token_hex(8)
        token = int(
            cast(int, self.client.eval(_ACQUIRE, 2, self.key, self.fence_key, owner, self._ttl_ms))
        )
        if token == 0:
            raise LockBusy(f"{self.key} is held by another writer", delay=max(self.ttl / 4, 1.0))
        self.token = token
        self.value = f"{owner}:{token}"
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew_loop, daemon=True, name="lock-renew")
        self._renewer.start()
        return token

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                renewed = self.client.eval(_RENEW, 1, self.key, self.value, self._ttl_ms)
            except redis.RedisError:
                continue  # the next check() fails closed if the lock really is gone
            if not renewed:
                return

    def check(self) -> None:
        """Raise `LockLost` unless this grant still holds the lock and the newest token."""
        valid = self.client.eval(_CHECK, 2, self.key, self.fence_key, self.value, str(self.token))
        if not valid:
            raise LockLost(f"lost {self.key} (fencing token {self.token} is stale)", delay=1.0)

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        # On failure it expires on its own; the fence keeps a late writer out either way.
        with contextlib.suppress(redis.RedisError):
            self.client.eval(_RELEASE, 1, self.key, self.value)

    def __enter__(self) -> FencedLock:
        self.acquire()
        return self

    def __exit__(self, *_: object) -> None:
        self.release()
