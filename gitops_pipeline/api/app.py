"""FastAPI application: health, pipelines, sync trigger. Handlers only read Redis or enqueue."""

from __future__ import annotations

from typing import Annotated, Any

import redis
from celery import Celery
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from gitops_pipeline import events
from gitops_pipeline.api.auth import require
from gitops_pipeline.api.metrics import SyncCollector
from gitops_pipeline.celery_app import celery_config
from gitops_pipeline.config import Settings
from gitops_pipeline.store import Keys, connect

Read = Annotated[str, Depends(require("read"))]
Admin = Annotated[str, Depends(require("admin"))]


def _state(request: Request) -> tuple[Settings, redis.Redis, Keys]:
    state = request.app.state
    return state.settings, state.redis, state.keys


def _pipeline_status(client: redis.Redis, keys: Keys, name: str) -> dict[str, Any]:
    raw: dict[str, str] = client.hgetall(keys.sync(name))  # type: ignore[assignment]
    return {"name": name, **raw}


def create_app(settings: Settings) -> FastAPI:
    # A sender of its own: the web process only enqueues, and never binds the global app.
    celery = Celery("gitops-pipeline-api", set_as_current=False)
    celery.conf.update(celery_config(settings))
    app = FastAPI(
        title="gitops-pipeline",
        version="1",
        docs_url="/api/docs",
        openapi_url="/api/v1/openapi.json",
    )
    app.state.settings = settings
    app.state.redis = connect(settings.redis_url)
    app.state.keys = Keys(settings.key_prefix)

    @app.get("/healthz")
    def health(request: Request) -> JSONResponse:
        _, client, _ = _state(request)
        try:
            client.ping()
        except redis.RedisError as exc:
            return JSONResponse({"redis": f"unreachable: {exc}"}, status_code=503)
        return JSONResponse({"redis": "ok"})

    registry = CollectorRegistry()
    registry.register(SyncCollector(settings, app.state.redis))

    @app.get("/metrics")
    def metrics() -> Response:
        """Prometheus exposition; unauthenticated like most scrape targets, and secret-free."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/v1/pipelines")
    def pipelines(request: Request, scope: Read) -> list[dict[str, Any]]:
        settings, client, keys = _state(request)
        return [_pipeline_status(client, keys, p.name) for p in settings.pipelines]

    def known(settings: Settings, name: str) -> None:
        if name not in {p.name for p in settings.pipelines}:
            raise HTTPException(404, f"unknown pipeline {name!r}")

    @app.get("/api/v1/pipelines/{name}")
    def pipeline(name: str, request: Request, scope: Read) -> dict[str, Any]:
        settings, client, keys = _state(request)
        known(settings, name)
        status = _pipeline_status(client, keys, name)
        status["events"] = [e.__dict__ for e in events.recent(client, keys, name, count=20)]
        return status

    @app.post("/api/v1/pipelines/{name}/sync", status_code=202)
    def sync(name: str, request: Request, scope: Admin) -> dict[str, str]:
        known(request.app.state.settings, name)
        result = celery.send_task("sync.trigger", args=[name], kwargs={"full": True})
        return {"job": str(result.id)}

    return app
