"""Registry scanning: `scan.dispatch` fans out one `scan.repository` per due repository.

A repository is enqueued once per due period however many pipelines use it, and scanned by one
scanner process at a time (a lease), whichever machine the scanners run on.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from typing import Any

from gitops_pipeline import counters, events, runtime
from gitops_pipeline.celery_app import app
from gitops_pipeline.cluster.secrets import docker_config
from gitops_pipeline.cluster.workloads import live_workloads
from gitops_pipeline.config import Pipeline, Settings
from gitops_pipeline.errors import GitopsError
from gitops_pipeline.manifests.workloads import (
    container_images,
    image_selected,
    workload_annotations,
)
from gitops_pipeline.policy.annotations import read_policy
from gitops_pipeline.policy.filters import newest_by_version, parse_filter
from gitops_pipeline.registry.client import RateLimited, RegistryClient
from gitops_pipeline.registry.credentials import credentials_for
from gitops_pipeline.registry.ratelimit import RateLimiter, RateLimitTimeout
from gitops_pipeline.registry.reference import InvalidReference, parse_image
from gitops_pipeline.registry.scan import scan_repository
from gitops_pipeline.tasks.clients import binary_redis, cluster_client, rendered_objects, tag_cache

log = logging.getLogger(__name__)

DISPATCH_LEASE = 900.0  # longer than a scan may take, queueing included
SCAN_LEASE = 600.0
RATE_WAIT = 60.0  # longest a request waits for the shared rate limit


def _limiter() -> RateLimiter:
    settings = runtime.settings()
    registry = settings.registry
    return RateLimiter(
        binary_redis(settings.redis_url),
        settings.key_prefix,
        registry.default_rps,
        registry.default_burst,
        {host: (limit.rps, limit.burst) for host, limit in registry.hosts.items()},
    )


def _live_objects(pipeline: Pipeline, rendered: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Workloads running in the pipeline's namespaces but not (or no longer) in Git."""
    namespaces = {
        (o.get("metadata") or {}).get("namespace") or pipeline.cluster.default_namespace
        for o in rendered
        if o.get("kind") != "Namespace"
    }
    namespaces |= set(pipeline.cluster.allow_namespaces)
    if not namespaces:
        return []
    cluster = pipeline.cluster
    try:
        dynamic, _ = cluster_client(cluster.kubeconfig, cluster.context, cluster.impersonate)
        return live_workloads(dynamic, namespaces)
    except GitopsError as exc:
        log.warning("cannot list live workloads of %s: %s", pipeline.name, exc)
        return []


def repository_filters(settings: Settings) -> dict[str, set[str]]:
    """Canonical repository name -> the tag filters of every container that runs it."""
    return {repo: plan[0] for repo, plan in repository_plans(settings).items()}


Plan = tuple[set[str], set[str], set[str]]


def repository_plans(settings: Settings) -> dict[str, Plan]:
    """Canonical repository name -> (tag filters of its containers, pipelines that run it,
    their image pull secrets as `pipeline/namespace/name`)."""
    plans: dict[str, Plan] = {}
    for pipeline in settings.pipelines:
        if not pipeline.registry.scanning:
            continue
        objects = rendered_objects(pipeline)
        objects += _live_objects(pipeline, objects)
        annotations = workload_annotations(objects, pipeline.cluster.default_namespace)
        for image in container_images(objects, pipeline.cluster.default_namespace):
            include, exclude = pipeline.registry.include_images, pipeline.registry.exclude_images
            if not image_selected(image.image, include, exclude):
                continue
            try:
                ref = parse_image(image.image)
            except InvalidReference as exc:
                events.record(
                    runtime.redis_client(), runtime.keys(), pipeline.name, "warning",
                    f"{image.workload} container {image.container}: {exc}",
                )  # fmt: skip
                continue
            policy = read_policy(annotations.get(image.workload, {}))
            filters, users, secrets = plans.setdefault(ref.name, (set(), set(), set()))
            filters.add(str(policy.filter_for(image.container)))
            users.add(pipeline.name)
            namespace = image.workload.split(":", 1)[0]
            secrets.update(f"{pipeline.name}/{namespace}/{name}" for name in image.pull_secrets)
    return plans


@app.task(name="scan.dispatch")
def dispatch() -> int:
    """Enqueue a scan of every due repository, once; return how many were enqueued."""
    settings = runtime.settings()
    plans = repository_plans(settings)
    cache = tag_cache()
    now = time.time()
    enqueued = 0
    for repo in cache.due(plans, now):
        if cache.try_dispatch(repo, now, DISPATCH_LEASE):
            filters, users, secrets = plans[repo]
            repository.delay(repo, sorted(filters), sorted(users), sorted(secrets))
            enqueued += 1
    return enqueued


def _needs_image(filters: Iterable[str]) -> Any:
    parsed = [parse_filter(text) for text in filters]

    def needs(tags: list[str]) -> list[str]:
        wanted: dict[str, None] = {}
        for tag_filter in parsed:
            if tag_filter.orders_by_version:
                wanted.update(dict.fromkeys(newest_by_version(tags, tag_filter)[:1]))
            else:
                wanted.update(dict.fromkeys(tag_filter.select(tags)))
        return list(wanted)

    return needs


def _pull_secrets(settings: Settings, refs: list[str]) -> list[dict[str, Any]]:
    """The docker configs of `pipeline/namespace/name` secrets, read with each pipeline's
    cluster identity; unreadable ones are skipped."""
    found: list[dict[str, Any]] = []
    for ref in refs:
        pipeline_name, namespace, name = ref.split("/", 2)
        try:
            cluster = settings.pipeline(pipeline_name).cluster
            dynamic, _ = cluster_client(cluster.kubeconfig, cluster.context, cluster.impersonate)
        except GitopsError as exc:
            log.warning("cannot read image pull secret %s: %s", ref, exc)
            continue
        config = docker_config(dynamic, namespace, name)
        if config is not None:
            found.append(config)
    return found


def _client(
    registry_name: str,
    api_host: str,
    settings: Settings,
    limiter: RateLimiter,
    pull_secrets: list[dict[str, Any]],
) -> RegistryClient:
    """A client for one registry; config keys (credentials, insecure) use the name users write."""
    registry = settings.registry
    configured = {
        host: (cred.username, cred.password.get_secret_value())
        for host, cred in registry.credentials.items()
    }
    credentials = credentials_for(registry_name, configured, registry.docker_config, pull_secrets)

    def wait_for_rate_limit(netloc: str) -> None:
        started = time.monotonic()
        try:
            waited = limiter.acquire(netloc, RATE_WAIT)
        except RateLimitTimeout:
            _count_rate_limit_wait(netloc, "timeout", time.monotonic() - started)
            raise
        if waited > 0:
            _count_rate_limit_wait(netloc, "granted", waited)

    def count_request(netloc: str, status: str) -> None:
        _count("registry_requests", host=netloc, status=status)

    return RegistryClient(
        api_host,
        insecure=registry_name in registry.insecure_hosts,
        credentials=credentials,
        platform=registry.platform,
        before_request=wait_for_rate_limit,
        after_request=count_request,
    )


def _count(metric: str, amount: float = 1, **labels: str) -> None:
    counters.incr(runtime.redis_client(), runtime.settings().key_prefix, metric, amount, **labels)


def _count_rate_limit_wait(host: str, result: str, seconds: float) -> None:
    _count("registry_rate_limit_waits", host=host, result=result)
    _count("registry_rate_limit_wait_seconds", seconds, host=host)


@app.task(name="scan.repository")
def repository(
    repo: str,
    filters: list[str],
    pipelines: list[str] | None = None,
    pull_secrets: list[str] | None = None,
) -> dict[str, Any]:
    """Scan one repository; errors are recorded on it and the cache keeps its last good data.

    New tags start automation for `pipelines` (those whose workloads run the repository).
    """
    settings = runtime.settings()
    cache = tag_cache()
    owner = uuid.uuid4().hex
    if not cache.claim(repo, owner, SCAN_LEASE):
        return {"repo": repo, "skipped": "another scanner holds it"}
    ref = parse_image(repo)
    limiter = _limiter()
    try:
        secrets = _pull_secrets(settings, pull_secrets or [])
        with _client(ref.registry, ref.api_host, settings, limiter, secrets) as client:
            result = scan_repository(
                client, cache, repo, ref.repository, _needs_image(filters), time.time()
            )
    except RateLimited as exc:
        limiter.penalize(ref.api_host, exc.retry_after)
        log.warning("scan of %s stopped by the registry's rate limit: %s", repo, exc)
        return {"repo": repo, "error": str(exc)}
    except Exception as exc:  # recorded on the repository by scan_repository
        log.warning("scan of %s failed: %s", repo, exc)
        return {"repo": repo, "error": str(exc)}
    finally:
        cache.release(repo, owner)
    for outcome, count in (("hit", result.cache_hits), ("miss", result.cache_misses)):
        if count:
            _count("registry_tag_cache_lookups", count, host=ref.api_host, result=outcome)
    if result.new_tags:
        for pipeline in pipelines or []:
            app.send_task("automation.plan", args=[pipeline])
    return {
        "repo": repo,
        "tags": result.tags,
        "new_tags": result.new_tags,
        "resolved": result.resolved,
        "configs": result.configs,
    }
