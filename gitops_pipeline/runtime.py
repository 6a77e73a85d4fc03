"""Process-wide state of a running operator process: its settings and its Redis client.

Entry points call `init` once at start; worker children inherit it across fork. A process that
never called `init` (e.g. `celery -A gitops_pipeline.celery_app ...`) reads the config file.
"""

from __future__ import annotations

import os

import redis

from gitops_pipeline.config import Settings, load_settings
from gitops_pipeline.store import Keys, connect

_settings: Settings | None = None
_redis: tuple[int, redis.Redis] | None = None


def init(settings: Settings) -> None:
    global _settings, _redis
    _settings = settings
    _redis = None


def settings() -> Settings:
    global _settings
    if _settings is None:
        _settings = load_settings()
    return _settings


def redis_client() -> redis.Redis:
    """One client per process (a forked child opens its own connection pool)."""
    global _redis
    if _redis is None or _redis[0] != os.getpid():
        _redis = (os.getpid(), connect(settings().redis_url))
    return _redis[1]


def keys() -> Keys:
    return Keys(settings().key_prefix)
