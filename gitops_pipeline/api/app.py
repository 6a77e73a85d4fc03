"""FastAPI application: its routers and the state they share. Handlers read Redis or enqueue."""

from __future__ import annotations

import logging

import redis
from celery import Celery
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from gitops_pipeline.api.health import router as health_router
from gitops_pipeline.api.hooks import webhook_router
from gitops_pipeline.api.metrics import collectors
from gitops_pipeline.api.operations import router as operations_router
from gitops_pipeline.api.page import status_page
from gitops_pipeline.api.pipelines import router as pipelines_router
from gitops_pipeline.celery_app import celery_config
from gitops_pipeline.config import Settings
from gitops_pipeline.registry.cache import TagCache
from gitops_pipeline.store import Keys, connect, connect_binary

log = logging.getLogger(__name__)


def redis_failed(request: Request, exc: Exception) -> JSONResponse:
    """503 with why, for any handler that needed Redis and did not get it (not a bare 500)."""
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        detail = f"Redis is unreachable: {exc}"
    else:
        detail = f"Redis failed: {exc}"
    log.warning("%s %s: %s", request.method, request.url.path, detail)
    return JSONResponse({"detail": detail}, status_code=503)


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
    app.exception_handler(redis.RedisError)(redis_failed)
    app.state.settings = settings
    app.state.redis = connect(settings.redis_url)
    app.state.keys = Keys(settings.key_prefix)
    app.state.celery = celery
    app.state.tag_cache = TagCache(connect_binary(settings.redis_url), settings.key_prefix)

    registry = CollectorRegistry()
    for collector in collectors(settings, app.state.redis):
        registry.register(collector)

    @app.get("/metrics")
    def metrics() -> Response:
        """Prometheus exposition; unauthenticated like most scrape targets, and secret-free."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(health_router)
    app.include_router(pipelines_router)
    app.include_router(status_page(settings))
    app.include_router(operations_router)
    app.include_router(webhook_router(settings, app.state.redis, app.state.tag_cache, celery))
    return app
