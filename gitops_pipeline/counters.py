"""Counters shared by every process, kept in Redis and exported by the web process's `/metrics`.

Workers run in many processes on many machines, and Prometheus scrapes only the web process, so a
worker's counts must live where the web process can read them: one Redis hash per metric
(`<prefix>metrics:<name>`), one field per label set (its JSON), incremented atomically.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import cast

import redis

Samples = list[tuple[dict[str, str], float]]


def _key(prefix: str, metric: str) -> str:
    return f"{prefix}metrics:{metric}"


def incr(client: redis.Redis, prefix: str, metric: str, amount: float = 1, **labels: str) -> None:
    """Add `amount` to `metric` for this label set. Counting never fails the caller's work."""
    field = json.dumps(labels, sort_keys=True)
    try:
        client.hincrbyfloat(_key(prefix, metric), field, amount)
    except redis.RedisError:
        return


def read(client: redis.Redis, prefix: str, metric: str) -> Samples:
    """Every label set of `metric` with its value."""
    return _samples(cast(dict[str | bytes, str | bytes], client.hgetall(_key(prefix, metric))))


def read_many(client: redis.Redis, prefix: str, metrics: Iterable[str]) -> dict[str, Samples]:
    """`read` for several metrics in one round trip, as a scrape wants it."""
    names = list(metrics)
    pipe = client.pipeline(transaction=False)
    for metric in names:
        pipe.hgetall(_key(prefix, metric))
    replies = cast(list[dict[str | bytes, str | bytes]], pipe.execute())
    return {metric: _samples(raw) for metric, raw in zip(names, replies, strict=True)}


def _samples(raw: dict[str | bytes, str | bytes]) -> Samples:
    """The readable samples; a damaged field or value is left out rather than failing a scrape."""
    out: Samples = []
    for field, value in raw.items():
        try:
            text = field.decode() if isinstance(field, bytes) else field
            labels = json.loads(text)
            number = float(value)
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(labels, dict) and math.isfinite(number):
            out.append(({str(k): str(v) for k, v in labels.items()}, number))
    return out
