"""Bearer-token auth with read and admin scopes, compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gitops_pipeline.config import Settings

_bearer = HTTPBearer(auto_error=False)


def _scope_of(settings: Settings, presented: str) -> str | None:
    scope = None
    for entry in settings.api.tokens:
        # Compare against every token so timing does not reveal which one matched.
        if hmac.compare_digest(entry.token.get_secret_value().encode(), presented.encode()):
            scope = entry.scope
    return scope


def require(scope: str) -> Callable[..., str]:
    """A dependency that admits `admin` everywhere and `read` only where `scope` is read."""

    def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> str:
        settings: Settings = request.app.state.settings
        if credentials is None:
            raise HTTPException(401, "missing bearer token", {"WWW-Authenticate": "Bearer"})
        granted = _scope_of(settings, credentials.credentials)
        if granted is None:
            raise HTTPException(401, "invalid token", {"WWW-Authenticate": "Bearer"})
        if scope == "admin" and granted != "admin":
            raise HTTPException(403, "this token is read-only")
        return granted

    return check
