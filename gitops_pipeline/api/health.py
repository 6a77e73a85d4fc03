"""Health of the web process (`/healthz`) and of the whole operator (`/readyz`).

`/healthz` answers whether this process can reach Redis: the probe for the web Deployment.
`/readyz` answers whether the operator can do work: Redis answers and at least one worker
announced itself within `presence.TTL` seconds. It is for monitoring and for `make run`-style
start-up waits, not for the web Deployment's readiness probe, which would take the API (and
with it `gitopsctl`) away exactly when the workers are down and someone needs to look.
"""

from __future__ import annotations

import redis
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from gitops_pipeline import presence

router = APIRouter(tags=["health"])


class Health(BaseModel):
    redis: str = Field(description="ok, or why Redis is unreachable")


class WorkerSeen(BaseModel):
    hostname: str
    queues: list[str]
    seen_at: float = Field(description="Unix time of its last announcement (worker's clock)")


class Readiness(BaseModel):
    ready: bool
    redis: str = Field(description="ok, or why Redis is unreachable")
    workers: list[WorkerSeen] = Field(description=f"seen in the last {presence.TTL} s")
    reason: str | None = Field(None, description="what is missing, when not ready")


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
def health(request: Request) -> JSONResponse:
    try:
        request.app.state.redis.ping()
    except redis.RedisError as exc:
        return JSONResponse({"redis": f"unreachable: {exc}"}, status_code=503)
    return JSONResponse({"redis": "ok"})


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Redis or every worker is missing"}},
)
def ready(request: Request) -> JSONResponse:
    client: redis.Redis = request.app.state.redis
    try:
        client.ping()
        workers = presence.seen(client, request.app.state.keys.prefix)
    except redis.RedisError as exc:
        answer = Readiness(
            ready=False, redis=f"unreachable: {exc}", workers=[], reason="Redis is unreachable"
        )
        return JSONResponse(answer.model_dump(), status_code=503)
    seen = [WorkerSeen(**worker.__dict__) for worker in workers]
    if not seen:
        reason = f"no worker announced itself in the last {presence.TTL} s"
        answer = Readiness(ready=False, redis="ok", workers=[], reason=reason)
        return JSONResponse(answer.model_dump(), status_code=503)
    return JSONResponse(Readiness(ready=True, redis="ok", workers=seen).model_dump())
