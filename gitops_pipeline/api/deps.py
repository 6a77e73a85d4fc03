"""What every REST router shares: the auth scopes and the web process's state."""

from __future__ import annotations

from typing import Annotated

import redis
from fastapi import Depends, HTTPException, Request

from gitops_pipeline.api.auth import require
from gitops_pipeline.config import Settings
from gitops_pipeline.store import Keys

Read = Annotated[str, Depends(require("read"))]
Admin = Annotated[str, Depends(require("admin"))]


def state(request: Request) -> tuple[Settings, redis.Redis, Keys]:
    """The settings, Redis client and key layout `create_app` put on the application."""
    app_state = request.app.state
    return app_state.settings, app_state.redis, app_state.keys


def known(settings: Settings, name: str) -> None:
    """404 for a pipeline that is not configured."""
    if name not in {p.name for p in settings.pipelines}:
        raise HTTPException(404, f"unknown pipeline {name!r}")
