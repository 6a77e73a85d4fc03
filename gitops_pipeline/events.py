"""Per-pipeline event log: a capped Redis stream that the API, CLI and status page read."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, cast

import redis

from gitops_pipeline.store import Keys

MAX_EVENTS = 1000


@dataclass(frozen=True)
class Event:
    id: str
    time: float
    kind: str
    message: str
    data: dict[str, Any]


def record(
    client: redis.Redis, keys: Keys, pipeline: str, kind: str, message: str, **data: Any
) -> None:
    """Append an event; the stream keeps about the last MAX_EVENTS."""
    client.xadd(
        keys.events(pipeline),
        {"time": f"{time.time():.3f}", "kind": kind, "message": message, "data": json.dumps(data)},
        maxlen=MAX_EVENTS,
        approximate=True,
    )


def recent(client: redis.Redis, keys: Keys, pipeline: str, count: int = 50) -> list[Event]:
    """The newest `count` events, oldest first."""
    entries = cast(
        list[tuple[str, dict[str, str]]], client.xrevrange(keys.events(pipeline), count=count)
    )
    return [_event(entry_id, fields) for entry_id, fields in reversed(entries)]


def after(
    client: redis.Redis, keys: Keys, pipeline: str, event_id: str, count: int = 50
) -> list[Event]:
    """Up to `count` events newer than `event_id`, oldest first: a cursor for following the log.

    `0-0` reads from the start of the stream.
    """
    entries = cast(
        list[tuple[str, dict[str, str]]],
        client.xrange(keys.events(pipeline), min=f"({event_id}", count=count),
    )
    return [_event(entry_id, fields) for entry_id, fields in entries]


def _event(entry_id: str, fields: dict[str, str]) -> Event:
    return Event(
        id=entry_id,
        time=float(fields["time"]),
        kind=fields["kind"],
        message=fields["message"],
        data=json.loads(fields.get("data", "{}")),
    )
