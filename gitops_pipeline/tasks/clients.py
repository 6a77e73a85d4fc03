"""Clients that tasks share within a worker process."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import redis

from gitops_pipeline import identity, runtime
from gitops_pipeline.artifacts import applied_objects
from gitops_pipeline.cluster.client import api_client, cluster_id, dynamic_client
from gitops_pipeline.config import Pipeline
from gitops_pipeline.registry.cache import TagCache
from gitops_pipeline.store import connect_binary


@cache
def cluster_client(kubeconfig: Path | None, context: str | None, impersonate: str | None) -> Any:
    """One discovery-backed client per cluster identity per process, with the cluster's id."""
    api = api_client(kubeconfig, context, impersonate)
    return dynamic_client(api), cluster_id(api)


@cache
def binary_redis(url: str) -> redis.Redis:
    """A client for byte values (the packed tag cache), one per process."""
    return connect_binary(url)


def tag_cache() -> TagCache:
    settings = runtime.settings()
    return TagCache(binary_redis(settings.redis_url), settings.key_prefix)


def rendered_objects(pipeline: Pipeline) -> list[dict[str, Any]]:
    """The objects of the pipeline's last applied revision (empty before its first sync)."""
    return applied_objects(runtime.redis_client(), runtime.keys(), pipeline.name)


def git_credentials(pipeline: Pipeline) -> tuple[Path | None, str | None]:
    """The SSH key file (configured, or the generated deploy key) and token git uses for the
    pipeline's remote, for its mirror and its working copy alike."""
    git = pipeline.git
    key = identity.key_file(runtime.settings(), runtime.redis_client(), pipeline.name)
    return key, git.token.get_secret_value() if git.token else None
