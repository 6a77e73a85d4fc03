"""`/metrics` on the real services: each number is driven through the code path that counts it
(scan task, registry client, rate limiter, fenced locks, sync chain, broker) and read back the way
Prometheus reads it."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
import test_sync_e2e as e2e
import yaml
from celery import Celery
from fastapi.testclient import TestClient
from kubernetes import client as k8s
from prometheus_client.parser import text_string_to_metric_families

from gitops_pipeline import counters, runtime
from gitops_pipeline.api.app import create_app
from gitops_pipeline.celery_app import celery_config
from gitops_pipeline.config import Pipeline, Settings, parse_settings
from gitops_pipeline.locks import FencedLock, LockBusy, LockLost
from gitops_pipeline.store import Keys
from gitops_pipeline.tasks import scan, sync
from gitops_pipeline.testbed.gitremote import GitRemote
from gitops_pipeline.testbed.kube import KubeServer
from gitops_pipeline.testbed.registry import RegistryServer, push_image
from gitops_pipeline.testbed.registry_front import RegistryFront

EXAMPLE = Path(__file__).parents[2] / "examples" / "sample-app-deployment"
WAIT = 90.0  # an upper bound for a wait, not a speed check
DOWN = "127.0.0.1:9"  # nothing listens on the discard port


class Scraper:
    """Reads `/metrics` as Prometheus does: through the exposition-format parser."""

    def __init__(self, settings: Settings) -> None:
        self.api = TestClient(create_app(settings))

    def samples(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        response = self.api.get("/metrics")
        assert response.status_code == 200
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
        }

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples().get((name, frozenset(labels.items())))

    def wait_for(self, expected: float, name: str, **labels: str) -> None:
        """Counters are written after the state a test waits on: poll until they land."""
        deadline = time.monotonic() + WAIT
        while (value := self.value(name, **labels)) != expected and time.monotonic() < deadline:
            time.sleep(0.2)
        assert value == expected, (name, labels, value)


def _settings(redis_url: str, key_prefix: str, **config: object) -> Settings:
    base = {
        "redis_url": redis_url,
        "key_prefix": key_prefix,
        "pipelines": [{"name": "metrics", "git": {"url": "file:///unused.git"}}],
    }
    return parse_settings(yaml.safe_dump({**base, **config}), "test", {})


def _push(registry: RegistryServer, repository: str, tags: list[str]) -> None:
    for day, tag in enumerate(tags, start=1):
        push_image(registry.url, repository, tag, datetime(2024, 1, day, tzinfo=UTC))


def test_scans_count_registry_requests_and_tag_cache_hits(
    registry: RegistryServer, redis_url: str, key_prefix: str
) -> None:
    settings = _settings(redis_url, key_prefix, registry={"insecure_hosts": [registry.host, DOWN]})
    runtime.init(settings)
    repository = f"metrics/{key_prefix.strip(':')}-app"
    _push(registry, repository, ["a", "b", "c"])
    repo = f"{registry.host}/{repository}"
    metrics = Scraper(settings)
    requests, lookups = "gitops_registry_requests_total", "gitops_registry_tag_cache_lookups_total"

    assert scan.repository(repo, ["glob:*"]).get("error") is None
    assert metrics.value(requests, host=registry.host, status="200") == 1 + 3 * 2
    assert metrics.value(lookups, host=registry.host, result="miss") == 3
    assert metrics.value(lookups, host=registry.host, result="hit") is None

    assert scan.repository(repo, ["glob:*"]).get("error") is None  # the tag list only
    assert metrics.value(requests, host=registry.host, status="200") == 1 + 3 * 2 + 1
    assert metrics.value(lookups, host=registry.host, result="miss") == 3
    assert metrics.value(lookups, host=registry.host, result="hit") == 3

    assert "error" in scan.repository(f"{DOWN}/metrics/app", ["glob:*"])
    assert metrics.value(requests, host=DOWN, status="error") == 1


def test_a_429_is_counted_and_the_next_scan_waits_for_the_rate_limit(
    registry: RegistryServer, redis_url: str, key_prefix: str
) -> None:
    front = RegistryFront(registry.host).start()
    try:
        limits = {"default_rps": 1000, "default_burst": 1000}
        settings = _settings(
            redis_url, key_prefix, registry={"insecure_hosts": [front.host], **limits}
        )
        runtime.init(settings)
        repository = f"metrics/{key_prefix.strip(':')}-limited"
        _push(registry, repository, ["v1"])
        repo = f"{front.host}/{repository}"
        metrics = Scraper(settings)
        front.inject(429, headers={"Retry-After": "1"}, path_contains="/tags/list")

        assert "rate limited" in scan.repository(repo, ["glob:*"])["error"]
        requests = "gitops_registry_requests_total"
        assert metrics.value(requests, host=front.host, status="429") == 1
        waits_name = "gitops_registry_rate_limit_waits_total"
        assert metrics.value(waits_name, host=front.host, result="granted") is None

        assert scan.repository(repo, ["glob:*"]).get("error") is None  # after the block
        waits = metrics.value(waits_name, host=front.host, result="granted")
        seconds = metrics.value("gitops_registry_rate_limit_wait_seconds_total", host=front.host)
        assert waits is not None and waits >= 1
        assert seconds is not None and 0.5 <= seconds <= scan.RATE_WAIT
        assert metrics.value(requests, host=front.host, status="200") == 3
    finally:
        front.stop()


def test_lock_refusals_waits_and_losses_by_kind(redis_url: str, key_prefix: str) -> None:
    settings = _settings(redis_url, key_prefix)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    keys = Keys(key_prefix)
    metrics = Scraper(settings)

    def cluster_lock(ttl: float = 5.0) -> FencedLock:
        return FencedLock(client, keys.cluster_lock("c1"), keys.cluster_fence("c1"), ttl)

    holder, waiter = cluster_lock(), cluster_lock()
    holder.acquire()
    with pytest.raises(LockBusy):
        waiter.acquire()
    with pytest.raises(LockBusy):
        waiter.acquire()  # the marker keeps the first refusal's time
    time.sleep(0.3)
    holder.release()
    waiter.acquire()
    waiter.release()
    assert metrics.value("gitops_lock_refusals_total", kind="cluster") == 2
    assert metrics.value("gitops_lock_waits_total", kind="cluster") == 1
    seconds = metrics.value("gitops_lock_wait_seconds_total", kind="cluster")
    assert seconds is not None and 0.3 <= seconds < 5
    assert not client.exists(f"{keys.cluster_lock('c1')}:waiting")

    with cluster_lock():  # a grant without a refusal before it is not a wait
        pass
    assert metrics.value("gitops_lock_waits_total", kind="cluster") == 1

    stale = cluster_lock(ttl=0.3)
    stale.acquire()
    stale._stop.set()  # a paused process: no more renewals
    time.sleep(0.6)
    with cluster_lock() as newer:
        with pytest.raises(LockLost):
            stale.check()
        newer.check()
    stale.release()
    assert metrics.value("gitops_lock_lost_total", kind="cluster") == 1

    # The repository lock's key (automation.bump) holds a URL: the kind still comes out.
    repo_key = f"{key_prefix}lock:repo:file:///srv/app.git#master"
    with FencedLock(client, repo_key, f"{repo_key}:fence", ttl=5), pytest.raises(LockBusy):
        FencedLock(client, repo_key, f"{repo_key}:fence", ttl=5).acquire()
    assert metrics.value("gitops_lock_refusals_total", kind="repo") == 1
    assert metrics.value("gitops_lock_refusals_total", kind="cluster") == 2


def test_webhook_deliveries_are_exported(redis_url: str, key_prefix: str) -> None:
    settings = _settings(redis_url, key_prefix)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    for result in ("accepted", "accepted", "rejected"):
        counters.incr(client, key_prefix, "webhook_deliveries", source="git", result=result)
    metrics = Scraper(settings)
    name = "gitops_webhook_deliveries_total"
    assert metrics.value(name, source="git", result="accepted") == 2
    assert metrics.value(name, source="git", result="rejected") == 1


def test_queue_lengths_count_every_priority_and_the_unacknowledged(
    redis_url: str, key_prefix: str
) -> None:
    settings = _settings(redis_url, key_prefix)
    metrics = Scraper(settings)
    sender = Celery("metrics-test-sender", set_as_current=False)
    sender.conf.update(celery_config(settings))
    try:
        sender.send_task("sync.trigger", args=["metrics"])
        sender.send_task("scan.dispatch", priority=5)  # kombu keeps it in a list of its own
        queues = ("sync", "scan", "automation", "default")
        lengths = {q: metrics.value("gitops_queue_length", queue=q) for q in queues}
        assert lengths == {"sync": 1, "scan": 1, "automation": 0, "default": 0}
        assert metrics.value("gitops_queue_unacked") == 0
        with sender.connection_for_read() as connection:
            message = connection.default_channel.basic_get("sync", no_ack=False)
            assert message is not None
            assert metrics.value("gitops_queue_length", queue="sync") == 0
            assert metrics.value("gitops_queue_unacked") == 1
    finally:
        sender.close()


# --- the sync chain on a real worker and API server --------------------------------------------


worker = e2e.worker  # the sync e2e module's real worker (found by this name)


def test_syncs_count_results_objects_and_git_readiness(
    worker: Settings,
    kube: KubeServer,
    kube_api_client: k8s.ApiClient,
    kube_namespace: str,
    key_prefix: str,
    tmp_path: Path,
) -> None:
    remote = GitRemote(tmp_path / "git")
    remote.commit_tree(EXAMPLE, "sample-app v0.1")
    name = f"metrics-{key_prefix.strip(':')}"
    pipeline = Pipeline.model_validate(
        {
            "name": name,
            "git": {"url": remote.url},
            "cluster": {"kubeconfig": str(kube.kubeconfig), "default_namespace": kube_namespace},
        }
    )
    settings = worker.model_copy(update={"pipelines": [pipeline]})
    runtime.init(settings)
    metrics = Scraper(settings)
    syncs, objects = "gitops_syncs_total", "gitops_synced_objects_total"

    sync.trigger.delay(name)
    metrics.wait_for(1, syncs, pipeline=name, result="success")
    assert metrics.value(objects, pipeline=name, result="applied") == 2
    assert metrics.value("gitops_git_ready", pipeline=name) == 1

    bad = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Not_Valid"}}
    remote.commit({"bad.yaml": yaml.safe_dump(bad)}, "an object the API server refuses")
    sync.trigger.delay(name)
    metrics.wait_for(1, syncs, pipeline=name, result="with-errors")
    assert metrics.value(objects, pipeline=name, result="failed") == 1
    assert metrics.value(objects, pipeline=name, result="unchanged") == 2

    remote.commit({"broken.yaml": "kind: [\n"}, "a file that does not parse")
    sync.trigger.delay(name)
    metrics.wait_for(1, syncs, pipeline=name, result="failed")
    assert metrics.value("gitops_git_ready", pipeline=name) == 1  # generate failed, not git

    remote.bare.rename(remote.bare.with_name("moved.git"))
    sync.trigger.delay(name)
    metrics.wait_for(2, syncs, pipeline=name, result="failed")
    assert metrics.value("gitops_git_ready", pipeline=name) == 0
    assert metrics.value(syncs, pipeline=name, result="success") == 1
