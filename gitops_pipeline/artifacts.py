"""The rendered objects of a pipeline's last applied revision, as `sync.generate` stored them.

Workers (scan planning, automation) and the web process (workloads, images, status page) read
the same artifact: the sync record names its key, and it lives for `ARTIFACT_TTL`.
"""

from __future__ import annotations

import json
import logging
from typing import Any, cast

import redis

from gitops_pipeline.store import Keys

log = logging.getLogger(__name__)


def applied_objects(client: redis.Redis, keys: Keys, pipeline: str) -> list[dict[str, Any]]:
    """The objects of the last applied revision (empty before the first sync, or once expired)."""
    artifact = cast(str | None, client.hget(keys.sync(pipeline), "artifact"))
    raw = cast(str | None, client.get(artifact)) if artifact else None
    if raw is None:
        return []
    try:
        return [item["object"] for item in json.loads(raw)["objects"]]
    except (ValueError, KeyError, TypeError) as exc:
        # Only `sync.generate` writes it; a damaged one reads as nothing rendered (the next sync
        # renders it again) rather than failing every reader.
        log.warning("rendered artifact %s of %s is unreadable: %s", artifact, pipeline, exc)
        return []
