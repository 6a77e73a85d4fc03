"""REST endpoints for workloads, images, policy changes, releases and their jobs.

Reads come from Redis (the last applied revision's rendered objects, the tag cache); writes are
checked here, so an invalid filter or a malformed release is refused with 400 before anything
is queued, then recorded as a job and enqueued (`automation.policy` / `automation.release`).
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime
from typing import Annotated, Any, cast

import redis
from celery import Celery
from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field, ValidationError

from gitops_pipeline import jobs
from gitops_pipeline.api.deps import Admin, Read, known, state
from gitops_pipeline.api.records import object_errors
from gitops_pipeline.artifacts import applied_objects
from gitops_pipeline.config import Settings
from gitops_pipeline.images import list_images
from gitops_pipeline.manifests.workloads import container_images, workload_annotations
from gitops_pipeline.policy.annotations import Policy, read_policy
from gitops_pipeline.registry.cache import TagCache
from gitops_pipeline.release import ReleaseError, workload_key
from gitops_pipeline.tasks.operations import policy_update, release_spec

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1")


class Container(BaseModel):
    name: str
    image: str
    filter: str
    init: bool


class Workload(BaseModel):
    id: str = Field(description="namespace:Kind/name")
    containers: list[Container]
    automated: bool
    locked: bool
    locked_user: str = ""
    locked_msg: str = ""
    policy_errors: list[str] = []
    sync: str = Field(description="applied, or the error of the last sync for this workload")


class Tag(BaseModel):
    tag: str
    digest: str | None
    created: datetime | None
    running: bool


class ContainerTags(BaseModel):
    workload: str
    container: str
    image: str
    filter: str
    tags: list[Tag]


class PolicyRequest(BaseModel):
    workloads: list[str] = Field(min_length=1, description="namespace:Kind/name")
    automate: bool | None = None
    lock: bool | None = None
    user: str = ""
    message: str = ""
    tag_all: str | None = None
    tags: dict[str, str] = Field(default_factory=dict, description="container -> tag filter")


class ReleaseRequest(BaseModel):
    workloads: list[str] = Field(default_factory=list)
    all: bool = False
    image: str | None = Field(None, description="repo:tag; omitted: every image to its newest")
    exclude: list[str] = Field(default_factory=list)
    force: bool = False
    dry_run: bool = False


class JobRef(BaseModel):
    job: str


class Job(BaseModel):
    id: str
    pipeline: str
    kind: str
    status: str = Field(description="queued, running, succeeded or failed")
    request: dict[str, Any]
    result: dict[str, Any] | None = None
    error: str = ""
    sha: str = ""
    sync: str = Field("", description="waiting or applied, once a commit was pushed")
    applied_revision: str = ""
    created_at: str = ""
    finished_at: str = ""
    applied_at: str = ""


def _namespace(settings: Settings, name: str) -> str:
    return settings.pipeline(name).cluster.default_namespace


@router.get("/pipelines/{name}/workloads")
def workloads(
    name: str,
    request: Request,
    scope: Read,
    namespace: str | None = None,
    container: str | None = None,
) -> list[Workload]:
    """Workloads of the last applied revision with their containers, policies and sync state."""
    settings, client, keys = state(request)
    known(settings, name)
    objects = applied_objects(client, keys, name)
    default_ns = _namespace(settings, name)
    annotations = workload_annotations(objects, default_ns)
    errors = object_errors(cast(str | None, client.hget(keys.sync(name), "errors")))
    found: dict[str, Workload] = {}
    policies: dict[str, Policy] = {}
    for item in container_images(objects, default_ns):
        if namespace and not item.workload.startswith(f"{namespace}:"):
            continue
        policy = policies.get(item.workload)
        if policy is None:
            policy = policies[item.workload] = read_policy(annotations.get(item.workload, {}))
            found[item.workload] = Workload(
                id=item.workload,
                containers=[],
                automated=policy.automated,
                locked=policy.locked,
                locked_user=policy.locked_user,
                locked_msg=policy.locked_msg,
                policy_errors=list(policy.errors),
                sync=errors.get(item.workload) or "applied",
            )
        found[item.workload].containers.append(
            Container(
                name=item.container,
                image=item.image,
                filter=str(policy.filter_for(item.container)),
                init=item.init,
            )
        )
    if container:
        return [w for w in found.values() if any(c.name == container for c in w.containers)]
    return list(found.values())


@router.get("/pipelines/{name}/images")
def images(
    name: str,
    request: Request,
    scope: Read,
    workload: str | None = None,
    namespace: str | None = None,
    limit: Annotated[int | None, Query(ge=1)] = None,
) -> list[ContainerTags]:
    """Each container's image and the tags its filter allows, newest first."""
    settings, client, keys = state(request)
    known(settings, name)
    objects = applied_objects(client, keys, name)
    cache: TagCache = request.app.state.tag_cache
    wanted = None
    if workload is not None:
        try:
            wanted = workload_key(workload)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
    listings = list_images(objects, _namespace(settings, name), cache, limit=limit)
    out = []
    for listing in listings:
        if wanted is not None and _key_or_none(listing.workload) != wanted:
            continue
        if namespace and not listing.workload.startswith(f"{namespace}:"):
            continue
        tags = [
            Tag(tag=t.tag, digest=t.digest, created=t.created, running=t.running)
            for t in listing.tags
        ]
        out.append(
            ContainerTags(
                workload=listing.workload,
                container=listing.container,
                image=listing.image,
                filter=listing.filter,
                tags=tags,
            )
        )
    if wanted is not None and not out:
        raise HTTPException(404, f"workload {workload} not found in pipeline {name!r}")
    return out


def _key_or_none(workload: str) -> str | None:
    """`workload_key`, or None for a rendered object whose ref does not parse (no name)."""
    try:
        return workload_key(workload)
    except ValueError:
        return None


def _writable(settings: Settings, name: str) -> None:
    """409 for a write to a pipeline whose repository is read-only to the operator."""
    if settings.pipeline(name).git.readonly:
        raise HTTPException(409, f"pipeline {name!r} is read-only (git.readonly)")


def _enqueue(request: Request, name: str, kind: str, body: dict[str, Any]) -> JobRef:
    _, client, keys = state(request)
    job_id = jobs.create(client, keys.prefix, name, kind, body)
    celery: Celery = request.app.state.celery
    try:
        celery.send_task(f"automation.{kind}", args=[job_id, name], ignore_result=True)
    except Exception as exc:  # the broker refused or is down: kombu's errors have no common base
        reason = f"could not queue: {exc}"
        log.warning("job %s (%s of %s) %s", job_id, kind, name, reason)
        # Without Redis either, the job expires queued; the answer below still says why.
        with contextlib.suppress(redis.RedisError):
            jobs.fail(client, keys.prefix, job_id, reason)
        raise HTTPException(503, f"could not queue the {kind} job: {exc}") from None
    return JobRef(job=job_id)


@router.post("/pipelines/{name}/policy", status_code=202)
def policy(name: str, body: PolicyRequest, request: Request, scope: Admin) -> JobRef:
    """Change workloads' policies (automate, lock, tag filters) in Git as one commit."""
    known(request.app.state.settings, name)
    data = body.model_dump()
    try:
        policy_update(data)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    _writable(request.app.state.settings, name)
    return _enqueue(request, name, "policy", data)


@router.post("/pipelines/{name}/release", status_code=202)
def release(name: str, body: ReleaseRequest, request: Request, scope: Admin) -> JobRef:
    """Release images to workloads as one commit (or plan it only, with dry_run)."""
    known(request.app.state.settings, name)
    data = body.model_dump()
    try:
        release_spec(data)
    except ReleaseError as exc:
        raise HTTPException(400, str(exc)) from None
    if not body.dry_run:
        _writable(request.app.state.settings, name)
    return _enqueue(request, name, "release", data)


@router.get("/jobs/{job_id}")
def job(job_id: str, request: Request, scope: Read) -> Job:
    """A job's status, per-workload outcome, commit and whether a sync applied it."""
    _, client, keys = state(request)
    unknown = HTTPException(404, f"unknown job {job_id!r} (jobs are kept for 7 days)")
    try:
        found = jobs.get(client, keys.prefix, job_id)
    except ValueError:  # its request or result is not JSON: not a job this API wrote
        log.warning("job %s: its hash is unreadable", job_id)
        raise unknown from None
    # A hash without an id is what a late write to an expired job leaves: no job at all.
    if found is None or "id" not in found:
        raise unknown
    try:
        return Job.model_validate(found)
    except ValidationError:
        log.warning("job %s: its hash is incomplete", job_id)
        raise unknown from None
