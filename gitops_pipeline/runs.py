"""Trigger coalescing: at most one running sync per pipeline, plus at most one pending rerun.

However many triggers arrive while a sync runs (beat ticks, webhooks, `gitopsctl sync`), they
collapse into one rerun after it. A rerun is a full apply if any of the collapsed triggers
asked for one.
"""

from __future__ import annotations

from typing import cast

import redis

from gitops_pipeline.store import Keys

_START = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  return 1
end
if ARGV[3] == 'full' then
  redis.call('SET', KEYS[2], 'full', 'EX', ARGV[2])
else
  redis.call('SET', KEYS[2], 'changed', 'NX', 'EX', ARGV[2])
end
return 0
"""

_FINISH = """
redis.call('DEL', KEYS[1])
local pending = redis.call('GET', KEYS[2])
redis.call('DEL', KEYS[2])
return pending
"""


def start(
    client: redis.Redis, keys: Keys, pipeline: str, run_id: str, ttl: int, full: bool
) -> bool:
    """Mark a sync as running and return True, or record a pending rerun and return False.

    The TTL frees the pipeline if a worker dies without finishing (its redelivered tasks still
    complete the sync).
    """
    mode = "full" if full else "changed"
    started = client.eval(
        _START, 2, keys.sync_run(pipeline), keys.sync_pending(pipeline), run_id, str(ttl), mode
    )
    return bool(started)


def finish(client: redis.Redis, keys: Keys, pipeline: str) -> str | None:
    """End the running sync; return `full` or `changed` when a rerun is pending."""
    pending = client.eval(_FINISH, 2, keys.sync_run(pipeline), keys.sync_pending(pipeline))
    return cast(str | None, pending)
