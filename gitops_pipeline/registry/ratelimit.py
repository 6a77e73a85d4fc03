"""A request rate limit per registry host, shared by every scanner process through Redis.

A token bucket kept in the hash ``<prefix>rl:<host>``: ``tokens`` as of ``updated_at``, refilled
at the host's current rate up to ``burst``; a request takes one token or waits until one is
there. So an idle host allows ``burst`` requests at once and ``rate`` per second after that,
whichever process asks. Time is Redis's (``TIME`` inside the scripts), so scanners on machines
with skewed clocks still share one schedule. (GCRA, the single-timestamp form of the same
bucket, was tried first: its stored time is debt at the rate of the moment, which turns wrong
when the rate changes, e.g. a block taken at 0.1/s would outlast the recovery by minutes.)

The ``limits`` package was evaluated first and does not fit: its limits are an integer amount
per whole number of seconds with no separate burst (``20/second`` lets 20 go at once), the
amount is part of the storage key (so halving the rate after a 429 would start from a fresh,
full budget), and it has no blocking acquire. Hence these Lua scripts.

On a 429 (`RateLimiter.penalize`) the host's rate halves, down to a floor, and every process
waits out ``Retry-After`` (``blocked_until``), after which requests resume one at a time, with
no burst; the rate then climbs back linearly by ``recovery_step`` of the configured rate per
``recovery_period`` (additive increase, multiplicative decrease, as TCP does). A 429 that
arrives while an earlier one's block is still running extends the block but does not halve
again: requests in flight when the first came back report the same overload.

The client may decode responses or not.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import redis

from gitops_pipeline.errors import TransientError

# ARGV: configured rate, burst, floor, recovery step, recovery period, then the script's own.
# Leaves: now, rate (current), burst, floor, tokens (available at now), blocked_until.
_PRELUDE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local configured, burst, floor = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated_at', 'rate', 'penalized_at',
                         'blocked_until')
local rate = configured
if state[3] then
  local climbed = configured * tonumber(ARGV[4]) * (now - tonumber(state[4])) / tonumber(ARGV[5])
  rate = math.max(floor, math.min(configured, tonumber(state[3]) + climbed))
end
local tokens = burst
if state[1] then
  local refill = math.max(0, now - tonumber(state[2])) * rate
  tokens = math.min(burst, tonumber(state[1]) + refill)
end
local blocked_until = tonumber(state[5]) or 0
local function fmt(value) return string.format('%.6f', value) end
"""

# ARGV[6]: seconds the caller has waited so far, counted when the request is granted.
_ACQUIRE = (
    _PRELUDE
    + """
if now < blocked_until then return {0, fmt(blocked_until - now)} end
if tokens < 1 then return {0, fmt((1 - tokens) / rate)} end
redis.call('HSET', KEYS[1], 'tokens', fmt(tokens - 1), 'updated_at', fmt(now))
local waited = tonumber(ARGV[6])
if waited > 0 then
  redis.call('HINCRBYFLOAT', KEYS[1], 'waited', ARGV[6])
  redis.call('HINCRBY', KEYS[1], 'waits', 1)
end
return {1, '0'}
"""
)

# ARGV[6]: Retry-After in seconds. The bucket keeps at most one token through the block and
# starts refilling when it ends.
_PENALIZE = (
    _PRELUDE
    + """
if now >= blocked_until then
  rate = math.max(floor, rate / 2)
  redis.call('HSET', KEYS[1], 'rate', fmt(rate), 'penalized_at', fmt(now))
end
blocked_until = math.max(blocked_until, now + tonumber(ARGV[6]))
redis.call('HSET', KEYS[1], 'tokens', fmt(math.min(1, tokens)), 'updated_at', fmt(blocked_until),
           'blocked_until', fmt(blocked_until))
return fmt(rate)
"""
)

_RATE = _PRELUDE + "return fmt(rate)"

MAX_BLOCK = 3600.0
"""The longest a 429's ``Retry-After`` blocks a host, in seconds."""


class RateLimitTimeout(TransientError):
    """The host's rate limit would not let a request go before the caller's timeout.

    ``delay`` is the wait the limiter asked for at that moment: a retry after it may succeed.
    """


@dataclass(frozen=True)
class WaitStats:
    """Waits on one host's limit, summed over every process: how many and how long."""

    count: int
    seconds: float


class RateLimiter:
    """Per-host request rates shared through Redis (see the module docstring).

    ``per_host`` maps a registry host (as the client addresses it, e.g. ``ghcr.io`` or
    ``localhost:5000``) to ``(requests per second, burst)``; other hosts get the defaults.
    """

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = "gp:",
        default_rps: float = 10.0,
        default_burst: int = 20,
        per_host: Mapping[str, tuple[float, int]] | None = None,
        *,
        floor: float = 0.1,
        recovery_step: float = 0.1,
        recovery_period: float = 60.0,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self._default = _checked("default", default_rps, default_burst)
        self._per_host = {
            host.lower(): _checked(host, rps, burst)
            for host, (rps, burst) in (per_host or {}).items()
        }
        if floor <= 0 or recovery_step <= 0 or recovery_period <= 0:
            raise ValueError("floor, recovery_step and recovery_period must be positive")
        self.floor = floor
        self.recovery_step = recovery_step
        self.recovery_period = recovery_period
        self._acquire = client.register_script(_ACQUIRE)
        self._penalize = client.register_script(_PENALIZE)
        self._rate = client.register_script(_RATE)

    def limits(self, host: str) -> tuple[float, int]:
        """The configured ``(rate, burst)`` of ``host``."""
        return self._per_host.get(host.lower(), self._default)

    def _key(self, host: str) -> str:
        return f"{self.prefix}rl:{host.lower()}"

    def _args(self, host: str) -> list[float | int]:
        rps, burst = self.limits(host)
        return [rps, burst, min(self.floor, rps), self.recovery_step, self.recovery_period]

    def acquire(self, host: str, timeout: float) -> float:
        """Wait until a request to ``host`` may go; return the seconds waited.

        Raises `RateLimitTimeout` as soon as the wait the limiter asks for is longer than what
        is left of ``timeout``, rather than sleeping first and failing afterwards.
        """
        start = time.monotonic()
        deadline = start + timeout
        waited = 0.0
        while True:
            reply = self._acquire(keys=[self._key(host)], args=[*self._args(host), repr(waited)])
            granted, wait = cast(list[int | bytes | str], reply)
            if int(granted):
                return waited
            needed = float(wait)
            if time.monotonic() + needed > deadline:
                raise RateLimitTimeout(
                    f"registry {host}: the rate limit asks for a wait of {needed:.2f}s, "
                    f"longer than the {timeout:g}s timeout allows",
                    delay=needed,
                )
            time.sleep(needed)
            waited = time.monotonic() - start

    def penalize(self, host: str, retry_after: float) -> float:
        """Record a 429 from ``host``: halve its rate, block everyone ``retry_after`` seconds.

        A ``Retry-After`` beyond `MAX_BLOCK` is cut to it, so a bad header cannot stop scans
        for days. Returns the host's new rate.
        """
        block = min(max(0.0, retry_after), MAX_BLOCK)
        reply = self._penalize(keys=[self._key(host)], args=[*self._args(host), block])
        return float(cast(bytes | str, reply))

    def rate(self, host: str) -> float:
        """The host's current rate: configured, or lower while recovering from a 429."""
        return float(cast(bytes | str, self._rate(keys=[self._key(host)], args=self._args(host))))

    def waits(self, host: str) -> WaitStats:
        count, seconds = cast(
            list[bytes | str | None], self.client.hmget(self._key(host), ["waits", "waited"])
        )
        return WaitStats(int(count or 0), float(seconds or 0.0))


def _checked(host: str, rps: float, burst: int) -> tuple[float, int]:
    if rps <= 0 or burst < 1:
        raise ValueError(f"rate limit of {host}: rps must be positive and burst at least 1")
    return float(rps), int(burst)
