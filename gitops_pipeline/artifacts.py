"""The rendered objects of a revision, stored in Redis by `sync.generate` (`store`) and read
by workers (scan planning, automation) and the web process (workloads, images, status page) for
the pipeline's last applied revision (`applied_objects`): the sync record names its key."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any, cast

import redis

from gitops_pipeline.manifests.load import Manifest
from gitops_pipeline.store import Keys

log = logging.getLogger(__name__)


def store(
    client: redis.Redis,
    key: str,
    pipeline: str,
    revision: str,
    manifests: Iterable[Manifest],
    ttl: int,
) -> None:
    """Keep the rendered set of `pipeline` at `revision` under `key` for `ttl` seconds."""
    payload = {
        "pipeline": pipeline,
        "revision": revision,
        "objects": [{"source": m.source, "object": m.obj} for m in manifests],
    }
    client.set(key, json.dumps(payload), ex=ttl)


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
