"""Webhooks under ``/hooks/<source>``: a git push syncs the pipelines that follow the pushed
branch; an image push makes the pushed repository due for a scan at once.

Each source has its own secret (``webhooks.<source>`` in the config; without one the source
answers 404), checked over the raw body before anything parses it. Handlers only verify, record
the delivery id and enqueue: the work happens in Celery. See docs/webhooks.md.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect

from gitops_pipeline import counters
from gitops_pipeline.api.webhook_sources import (
    SOURCES,
    Event,
    GitPush,
    Ignored,
    ImagePush,
    Source,
    body_hash,
)
from gitops_pipeline.config import Settings
from gitops_pipeline.git.urls import repo_key
from gitops_pipeline.registry.cache import TagCache

log = logging.getLogger(__name__)

METRIC = "webhook_deliveries"
_PLAIN_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@dataclass(frozen=True)
class Reply:
    status: int
    result: str
    body: dict[str, Any] = field(default_factory=dict)


class Refused(Exception):
    def __init__(self, status: int, result: str, detail: str) -> None:
        super().__init__(detail)
        self.reply = Reply(status, result, {"status": result, "detail": detail})


# --- the router ----------------------------------------------------------------------------


async def _read_capped(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Refused(413, "too-large", f"the body exceeds {limit} bytes")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise Refused(413, "too-large", f"the body exceeds {limit} bytes")
    except ClientDisconnect:
        raise Refused(400, "malformed", "the sender went away before the body ended") from None
    return bytes(body)


def _delivery_key(prefix: str, source: str, delivery: str) -> str:
    if _PLAIN_ID.fullmatch(delivery) is None:
        delivery = body_hash(delivery.encode())
    return f"{prefix}hook:{source}:{delivery}"


class _Hooks:
    def __init__(
        self, settings: Settings, client: redis.Redis, cache: TagCache, celery: Celery
    ) -> None:
        self.settings = settings
        self.client = client
        self.cache = cache
        self.celery = celery
        self.prefix = settings.key_prefix

    async def receive(self, source: str, request: Request) -> JSONResponse:
        return await self._receive(source, None, request)

    async def receive_with_secret(self, source: str, token: str, request: Request) -> JSONResponse:
        return await self._receive(source, token, request)

    async def _receive(self, source: str, token: str | None, request: Request) -> JSONResponse:
        spec = SOURCES.get(source)
        try:
            if spec is None:
                raise Refused(404, "unknown", f"no webhook source {source!r}")
            secret = self._secret(spec, source, token)
            body = await _read_capped(request, self.settings.webhooks.max_body_bytes)
            reply = await run_in_threadpool(
                self._deliver, spec, secret, request.headers, body, token
            )
        except Refused as refused:
            reply = refused.reply
        label = spec.name if spec is not None else "other"  # never an unbounded label set
        await run_in_threadpool(
            counters.incr, self.client, self.prefix, METRIC, source=label, result=reply.result
        )
        return JSONResponse(reply.body, reply.status)

    def _secret(self, spec: Source, source: str, token: str | None) -> bytes:
        secret = getattr(self.settings.webhooks, spec.secret)
        if secret is None or (token is not None and not spec.path_secret):
            raise Refused(404, "unknown", f"no webhook source {source!r}")
        return str(secret.get_secret_value()).encode()

    def _deliver(
        self, spec: Source, secret: bytes, headers: Headers, body: bytes, token: str | None
    ) -> Reply:
        if not spec.verify(headers, body, secret, token):
            raise Refused(401, "unauthorized", "missing or wrong signature")
        try:
            event = spec.parse(headers, body)
            delivery = spec.delivery(headers, body)
        except Exception as exc:  # authentic but unreadable: never a 500
            raise Refused(400, "malformed", f"malformed {spec.name} delivery: {exc}") from None
        key = None if delivery is None else _delivery_key(self.prefix, spec.name, delivery)
        try:
            ttl = int(self.settings.webhooks.replay_ttl)
            if key is not None and not self.client.set(key, "1", nx=True, ex=ttl):
                return Reply(200, "duplicate", {"status": "duplicate"})
            return self._act(event)
        except Exception as exc:
            log.warning("webhook %s: cannot enqueue: %s", spec.name, exc)
            if key is not None:
                self._forget(key)  # so the sender's retry is not taken for a replay
            raise Refused(503, "unavailable", "cannot enqueue the work now; retry later") from None

    def _forget(self, key: str) -> None:
        try:
            self.client.delete(key)
        except redis.RedisError as exc:
            log.warning("cannot forget webhook delivery %s: %s", key, exc)

    def _act(self, event: Event) -> Reply:
        if isinstance(event, Ignored):
            return _ignored(event.reason)
        if isinstance(event, GitPush):
            return self._sync(event)
        return self._scan(event)

    def _sync(self, push: GitPush) -> Reply:
        """Trigger each pipeline that follows a pushed branch of the pushed repository."""
        pushed = {repo_key(url) for url in push.urls}
        pipelines = [
            p
            for p in self.settings.pipelines
            if p.git.branch in push.branches and repo_key(p.git.url) in pushed
        ]
        if not pipelines:
            branches = ", ".join(push.branches)
            return _ignored(f"no pipeline follows {push.urls[0]} at {branches}")
        for pipeline in pipelines:
            # Expires like the poll tick, which covers whatever a lost trigger would have done.
            # No one reads the result: without ignore_result the sender would subscribe to it.
            self.celery.send_task(
                "sync.trigger",
                args=[pipeline.name],
                expires=pipeline.git.poll_interval,
                ignore_result=True,
            )
        return _accepted(pipelines=[p.name for p in pipelines])

    def _scan(self, push: ImagePush) -> Reply:
        """Make the pushed repositories due and ask for a dispatch.

        Only `scan.dispatch` knows, from the rendered manifests and the live workloads, the tag
        filters, the pipelines to automate and the pull secrets that `scan.repository` needs; a
        scan without them would record the new tags yet start no automation. Repositories the
        cache does not know are used by no pipeline (or not scanned yet, which makes them due
        anyway).
        """
        known = [repo for repo in push.repositories if self.cache.make_due(repo)]
        if not known:
            return _ignored(f"no pipeline scans {', '.join(push.repositories)}")
        self.celery.send_task(
            "scan.dispatch", expires=self.settings.registry.dispatch_interval, ignore_result=True
        )
        return _accepted(repositories=known)


def _accepted(**work: list[str]) -> Reply:
    return Reply(202, "accepted", {"status": "accepted", **work})


def _ignored(reason: str) -> Reply:
    return Reply(202, "ignored", {"status": "ignored", "reason": reason})


_PATH_SECRETS = "|".join(re.escape(s.name) for s in SOURCES.values() if s.path_secret)


class _RedactPathSecrets(logging.Filter):
    """Access logs print request paths, and the Docker Hub and Quay secrets are part of theirs."""

    _pattern = re.compile(rf"(/hooks/(?:{_PATH_SECRETS})/)[^/?#\s\"]+")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                self._pattern.sub(r"\1<redacted>", arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        return True


def webhook_router(
    settings: Settings, client: redis.Redis, cache: TagCache, celery: Celery
) -> APIRouter:
    """The `/hooks/...` routes; `celery` only sends (the web process runs no tasks)."""
    access_log = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _RedactPathSecrets) for f in access_log.filters):
        access_log.addFilter(_RedactPathSecrets())
    hooks = _Hooks(settings, client, cache, celery)
    router = APIRouter(prefix="/hooks", tags=["webhooks"])
    router.add_api_route("/{source}", hooks.receive, methods=["POST"], status_code=202)
    router.add_api_route(
        "/{source}/{token}", hooks.receive_with_secret, methods=["POST"], status_code=202
    )
    return router
