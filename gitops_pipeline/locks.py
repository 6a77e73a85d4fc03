"""Cluster and repository locks in Redis, with fencing tokens.

The lock keeps two writers from working at once most of the time; correctness comes from the
fencing token: every lock grant takes the next value of a counter that never goes down, and a
writer checks (atomically, in Lua) that its token is still the newest and its lock still held
before each batch of writes. A writer that paused past its lock's TTL finds a newer token and
stops without writing. redis-py's own `Lock` has no fencing tokens, hence this module.

A refused writer does not block: it raises `LockBusy` and its task retries later. So the time
writers wait for a lock is measured in Redis: the first refusal leaves a `<lock key>:waiting`
marker (Redis time) and the next grant takes it and counts the seconds since (`counters`, by the
kind in the key layout `<prefix>lock:<kind>:<name>`), as it counts refusals and lost locks.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import cast

import redis

from gitops_pipeline import counters
from gitops_pipeline.errors import TransientError

# Returns {token, seconds since the first refusal (empty if none)}; token 0 means refused.
_ACQUIRE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local token = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[1] .. ':' .. token, 'PX', ARGV[2])
  local since = redis.call('GET', KEYS[3])
  if since then
    redis.call('DEL', KEYS[3])
    return {token, string.format('%.6f', math.max(0, now - tonumber(since)))}
  end
  return {token, ''}
end
redis.call('SET', KEYS[3], string.format('%.6f', now), 'NX', 'PX', ARGV[3])
return {0, ''}
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


WAIT_HORIZON = 900.0
"""Seconds a refusal's waiting marker lasts: longer than a refused task keeps retrying, so a
marker left by writers that gave up does not inflate a much later grant's wait."""

_POLL = 0.05
"""Seconds between attempts while `acquire` waits."""

_KEY_LAYOUT = re.compile(r"(?P<prefix>.*?)lock:(?P<kind>[^:]+):")


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

    def acquire(self, wait: float = 0.0) -> int:
        """Take the lock and a new fencing token, polling for up to `wait` seconds while
        another writer holds it; then raise `LockBusy`."""
        owner = secrets.token_hex(8)
        waiting = f"{self.key}:waiting"
        horizon = str(int(WAIT_HORIZON * 1000))
        deadline = time.monotonic() + wait
        while True:
            reply = self.client.eval(
                _ACQUIRE, 3, self.key, self.fence_key, waiting, owner, self._ttl_ms, horizon
            )
            granted, waited = cast(list[int | str | bytes], reply)
            token = int(granted)
            if token != 0:
                break
            if time.monotonic() >= deadline:
                self._count("lock_refusals")
                raise LockBusy(
                    f"{self.key} is held by another writer", delay=max(self.ttl / 4, 1.0)
                )
            time.sleep(_POLL)
        if waited:
            self._count("lock_waits")
            self._count("lock_wait_seconds", float(waited))
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
            self._count("lock_lost")
            raise LockLost(f"lost {self.key} (fencing token {self.token} is stale)", delay=1.0)

    def _count(self, metric: str, amount: float = 1) -> None:
        """Count for `/metrics`, labelled with the lock's kind; keys of another layout are not."""
        layout = _KEY_LAYOUT.match(self.key)
        if layout is not None:
            prefix, kind = layout.group("prefix", "kind")
            counters.incr(self.client, prefix, metric, amount, kind=kind)

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
