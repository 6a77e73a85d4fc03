"""The read-only status page at `/`: every pipeline's sync, its workloads' images, its events.

Server-rendered with Jinja2 (autoescaped) and free of scripts: it refreshes itself with a meta
tag, and its Content-Security-Policy allows no script at all, so a hostile string in a manifest,
an error or an event can only ever show up as text. Who may see it is `api.status_page`
(see docs/status-page.md).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import ip_address
from typing import Any, cast

import redis
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined

from gitops_pipeline import events
from gitops_pipeline.api.auth import require
from gitops_pipeline.api.records import number, object_errors
from gitops_pipeline.artifacts import applied_objects
from gitops_pipeline.config import Pipeline, Settings
from gitops_pipeline.images import ContainerImages, list_images
from gitops_pipeline.manifests.workloads import workload_annotations
from gitops_pipeline.policy.annotations import read_policy
from gitops_pipeline.policy.filters import parse_filter, tag_version
from gitops_pipeline.registry.cache import TagCache
from gitops_pipeline.registry.reference import InvalidReference, parse_image
from gitops_pipeline.store import Keys

log = logging.getLogger(__name__)

REFRESH_SECONDS = 15
EVENTS_SHOWN = 20
TAGS_SHOWN = 8
SHORT_SHA = 12  # as the events spell revisions

# No script may run, styles only from the page itself, nothing loaded from anywhere.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_STATUS_CLASSES = {
    "synced": "ok",
    "synced-with-errors": "warn",
    "syncing": "busy",
    "failed": "bad",
}

_templates = Environment(
    loader=PackageLoader("gitops_pipeline.api", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True)
class TagView:
    tag: str
    created: str
    running: bool
    newer: bool


@dataclass(frozen=True)
class ContainerView:
    name: str
    image: str
    filter: str
    tags: list[TagView]
    more: int  # allowed tags not shown
    newer: int  # allowed tags newer than the running one, shown or not


@dataclass(frozen=True)
class WorkloadView:
    name: str
    automated: bool
    locked: bool
    locked_note: str
    policy_errors: tuple[str, ...]
    containers: list[ContainerView]


@dataclass(frozen=True)
class EventView:
    time: str
    kind: str
    message: str


@dataclass(frozen=True)
class PipelineView:
    name: str
    status: str
    status_class: str
    revision: str
    revision_full: str
    last_sync: str
    last_sync_ago: str
    error: str
    verify_error: str
    object_errors: dict[str, str]
    workloads: list[WorkloadView]
    workloads_note: str
    events: list[EventView]


def utc(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(timestamp: float | None, now: float) -> str:
    if timestamp is None:
        return ""
    seconds = max(0, int(now - timestamp))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def _newer_tags(listing: ContainerImages, cache: TagCache) -> set[str]:
    """The allowed tags newer than the running one: by version for semver filters, else by
    the image's created time (unknown when the running tag's image is not cached)."""
    try:
        ref = parse_image(listing.image)
    except InvalidReference:
        return set()
    if ref.tag is None:
        return set()
    if parse_filter(listing.filter).orders_by_version:
        current = tag_version(ref.tag)
        if current is None:
            return set()
        return {
            t.tag for t in listing.tags if (v := tag_version(t.tag)) is not None and v > current
        }
    running = next((t for t in listing.tags if t.running), None)
    if running is not None:
        created = running.created
    else:
        digest = cache.get_tags(ref.name).get(ref.tag)
        info = cache.get_image(digest) if digest else None
        created = info.created if info else None
    if created is None:
        return set()
    return {t.tag for t in listing.tags if t.created is not None and t.created > created}


def _workloads(
    objects: list[dict[str, Any]], namespace: str, cache: TagCache
) -> list[WorkloadView]:
    annotations = workload_annotations(objects, namespace)
    containers: dict[str, list[ContainerView]] = {}
    for listing in list_images(objects, namespace, cache):
        newer = _newer_tags(listing, cache)
        tags = [
            TagView(
                t.tag, utc(t.created.timestamp()) if t.created else "", t.running, t.tag in newer
            )
            for t in listing.tags[:TAGS_SHOWN]
        ]
        containers.setdefault(listing.workload, []).append(
            ContainerView(
                listing.container,
                listing.image,
                listing.filter,
                tags,
                more=max(0, len(listing.tags) - TAGS_SHOWN),
                newer=len(newer),
            )
        )
    views = []
    for name, listed in containers.items():
        policy = read_policy(annotations.get(name, {}))
        note = ": ".join(filter(None, [policy.locked_user, policy.locked_msg]))
        views.append(
            WorkloadView(name, policy.automated, policy.locked, note, policy.errors, listed)
        )
    return views


def _pipeline(
    client: redis.Redis, keys: Keys, cache: TagCache, pipeline: Pipeline, now: float
) -> PipelineView:
    record = cast(dict[str, str], client.hgetall(keys.sync(pipeline.name)))
    revision = record.get("revision", "")
    finished = number(record.get("finished_at"))
    objects = applied_objects(client, keys, pipeline.name)
    workloads = _workloads(objects, pipeline.cluster.default_namespace, cache)
    if not revision:
        note = "Nothing applied yet."
    elif not objects:
        note = (
            f"The rendered manifests of {revision[:SHORT_SHA]} are not in Redis (expired, or "
            "empty); the next sync renders them again."
        )
    else:
        note = "No workloads in the applied revision."
    recent = events.recent(client, keys, pipeline.name, count=EVENTS_SHOWN)
    status = record.get("status", "never synced")
    return PipelineView(
        name=pipeline.name,
        status=status,
        status_class=_STATUS_CLASSES.get(status, "none"),
        revision=revision[:SHORT_SHA],
        revision_full=revision,
        last_sync=utc(finished),
        last_sync_ago=ago(finished, now),
        error=record.get("error", ""),
        verify_error=record.get("verify_error", ""),
        object_errors=object_errors(record.get("errors")),
        workloads=workloads,
        workloads_note=note,
        events=[EventView(utc(e.time), e.kind, e.message) for e in reversed(recent)],
    )


def _is_loopback(listen: str) -> bool:
    host = listen.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def status_page(settings: Settings) -> APIRouter:
    """The router serving `/` as `api.status_page` says: public, behind a token, or not at all."""
    router = APIRouter(include_in_schema=False)
    mode = settings.api.status_page
    if mode == "off":
        return router
    if mode == "public" and not _is_loopback(settings.api.listen):
        log.warning(
            "the status page at / is public and the web process listens on %s; set "
            "api.status_page: token (or off) unless something in front of it checks who asks",
            settings.api.listen,
        )
    guard = [Depends(require("read"))] if mode == "token" else []

    @router.get("/", response_class=HTMLResponse, dependencies=guard)
    def page(request: Request) -> HTMLResponse:
        state = request.app.state
        now = time.time()
        try:
            pipelines = [
                _pipeline(state.redis, state.keys, state.tag_cache, spec, now)
                for spec in state.settings.pipelines
            ]
            problem = ""
        except redis.RedisError as exc:
            pipelines, problem = [], f"Redis is unreachable: {exc}"
        html = _templates.get_template("status.html").render(
            pipelines=pipelines,
            problem=problem,
            generated=utc(now),
            refresh=REFRESH_SECONDS,
        )
        return HTMLResponse(html, status_code=503 if problem else 200, headers=_HEADERS)

    return router
