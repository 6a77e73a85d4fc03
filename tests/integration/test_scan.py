"""Registry scanning on the real registry and Redis: what is fetched, what is kept, who scans."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
import yaml
from celery import Celery
from kubernetes import client as k8s

from gitops_pipeline import artifacts, runtime
from gitops_pipeline.celery_app import celery_config
from gitops_pipeline.config import parse_settings
from gitops_pipeline.manifests.load import Manifest
from gitops_pipeline.registry.cache import TagCache
from gitops_pipeline.registry.client import RateLimited, RegistryClient
from gitops_pipeline.registry.scan import scan_repository
from gitops_pipeline.store import Keys
from gitops_pipeline.tasks import scan
from gitops_pipeline.tasks.scan import repository_filters, repository_plans
from gitops_pipeline.testbed.kube import KubeServer
from gitops_pipeline.testbed.registry import RegistryServer, push_image, start_registry
from gitops_pipeline.testbed.registry_front import RegistryFront

REPO = Path(__file__).parents[2]
WAIT = 120.0  # upper bound for a wait, not a speed check


def _when(day: int) -> datetime:
    return datetime(2024, 1, day, tzinfo=UTC)


@pytest.fixture
def tag_cache(redis_url: str, key_prefix: str) -> TagCache:
    return TagCache(redis.Redis.from_url(redis_url), key_prefix)


@pytest.fixture
def front(registry: RegistryServer) -> Iterator[RegistryFront]:
    server = RegistryFront(registry.host).start()
    yield server
    server.stop()


def _push(registry: RegistryServer, repository: str, tags: dict[str, int]) -> None:
    for tag, day in tags.items():
        push_image(registry.url, repository, tag, _when(day), labels={"tag": tag})


def test_semver_needs_only_the_tag_list_and_the_chosen_digest(
    registry: RegistryServer, tag_cache: TagCache, key_prefix: str
) -> None:
    repository = f"scan/{key_prefix.strip(':')}-semver"
    _push(registry, repository, {"v0.1": 1, "v0.1.1": 2, "v0.2": 3, "v1.0": 4})
    name = f"{registry.host}/{repository}"
    with RegistryClient(registry.host, insecure=True) as client:
        result = scan_repository(
            client, tag_cache, name, repository, lambda tags: ["v0.1.1"], time.time()
        )
        assert (result.tags, result.resolved, result.configs) == (4, 1, 1)
        assert client.requests == 3  # tag list, manifest of v0.1.1, its config
    tags = tag_cache.get_tags(name)
    assert set(tags) == {"v0.1", "v0.1.1", "v0.2", "v1.0"}
    assert [t for t, d in tags.items() if d] == ["v0.1.1"]
    image = tag_cache.get_image(str(tags["v0.1.1"]))
    assert image is not None
    assert (image.created, dict(image.labels)) == (_when(2), {"tag": "v0.1.1"})


def test_warm_rescan_with_nothing_new_is_one_request(
    registry: RegistryServer, tag_cache: TagCache, key_prefix: str
) -> None:
    repository = f"scan/{key_prefix.strip(':')}-warm"
    _push(registry, repository, {"a": 1, "b": 2, "c": 3})
    name = f"{registry.host}/{repository}"
    with RegistryClient(registry.host, insecure=True) as client:
        scan_repository(client, tag_cache, name, repository, lambda tags: tags, time.time())
        cold = client.requests
    with RegistryClient(registry.host, insecure=True) as client:
        result = scan_repository(
            client, tag_cache, name, repository, lambda tags: tags, time.time()
        )
        assert client.requests == 1
    assert cold == 1 + 3 * 2  # list, then manifest + config per tag
    assert result.new_tags == [] and not result.changed
    _push(registry, repository, {"d": 4})
    with RegistryClient(registry.host, insecure=True) as client:
        result = scan_repository(
            client, tag_cache, name, repository, lambda tags: tags, time.time()
        )
        assert client.requests == 3
    assert result.new_tags == ["d"]


def test_429_stops_the_pass_and_keeps_what_is_cached(
    registry: RegistryServer, front: RegistryFront, tag_cache: TagCache, key_prefix: str
) -> None:
    repository = f"scan/{key_prefix.strip(':')}-limited"
    _push(registry, repository, {"a": 1, "b": 2})
    name = f"{front.host}/{repository}"
    with RegistryClient(front.host, insecure=True) as client:
        scan_repository(client, tag_cache, name, repository, lambda tags: tags, time.time())
    before = tag_cache.get_tags(name)
    _push(registry, repository, {"c": 3})
    front.inject(429, headers={"Retry-After": "7"}, path_contains="/manifests/")
    with RegistryClient(front.host, insecure=True) as client, pytest.raises(RateLimited) as caught:
        scan_repository(client, tag_cache, name, repository, lambda tags: tags, time.time())
    assert caught.value.retry_after == 7
    after = tag_cache.get_tags(name)
    assert {t: d for t, d in after.items() if t in before} == before
    assert after["c"] is None  # listed, not yet resolved
    meta = tag_cache.meta(name)
    assert meta is not None and meta.error is not None and "rate limited" in meta.error


def test_registry_down_is_recorded_and_the_cache_kept(
    registry: RegistryServer, tag_cache: TagCache, key_prefix: str
) -> None:
    repository = f"scan/{key_prefix.strip(':')}-down"
    _push(registry, repository, {"a": 1})
    name = f"{registry.host}/{repository}"
    with RegistryClient(registry.host, insecure=True) as client:
        scan_repository(client, tag_cache, name, repository, lambda tags: tags, time.time())
    cached = tag_cache.get_tags(name)
    with (
        RegistryClient("127.0.0.1:9", insecure=True, timeout=2) as client,
        pytest.raises(Exception, match=r"127\.0\.0\.1:9"),
    ):
        scan_repository(client, tag_cache, name, repository, lambda tags: tags, time.time())
    assert tag_cache.get_tags(name) == cached
    meta = tag_cache.meta(name)
    assert meta is not None and meta.error


REPOSITORIES = 200


def test_two_scanner_processes_scan_each_repository_once(
    registry: RegistryServer,
    front: RegistryFront,
    redis_server: object,
    key_prefix: str,
    tmp_path: Path,
) -> None:
    images = [
        f"{front.host}/fleet/{key_prefix.strip(':')}-app-{i:03d}:v1" for i in range(REPOSITORIES)
    ]
    for i in range(REPOSITORIES):
        push_image(registry.url, f"fleet/{key_prefix.strip(':')}-app-{i:03d}", "v1", _when(1))
    redis_url = redis_server.url  # type: ignore[attr-defined]
    config = {
        "redis_url": redis_url,
        "key_prefix": key_prefix,
        "work_dir": str(tmp_path / "work"),
        "registry": {"insecure_hosts": [front.host], "default_rps": 1000, "default_burst": 1000},
        "workers": {"scan_concurrency": 2},
        "pipelines": [{"name": "fleet", "git": {"url": "file:///unused.git"}}],
    }
    config_path = tmp_path / "gitops.yaml"
    config_path.write_text(yaml.safe_dump(config))
    settings = parse_settings(config_path.read_text(), str(config_path), {})
    # The pipeline's last rendered set, as `sync.generate` stores it: one Deployment per image.
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    keys = Keys(key_prefix)
    objects = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": f"app-{i:03d}"},
            "spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}},
        }
        for i, image in enumerate(images)
    ]
    artifact = keys.artifact("fleet-test")
    artifacts.store(client, artifact, "fleet", "x", [Manifest(o, "x.yaml") for o in objects], 3600)
    client.hset(keys.sync("fleet"), "artifact", artifact)

    workers = []
    for n in range(2):
        log = (tmp_path / f"scanner-{n}.log").open("w")
        workers.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "workers.scan",
                    "--config",
                    str(config_path),
                    "--hostname",
                    f"scanner{n}@%h",
                ],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    try:
        sender = Celery("scan-test-sender", set_as_current=False)
        sender.conf.update(celery_config(settings))
        for _ in range(3):  # several ticks, and dispatchers on both scanners
            sender.send_task("scan.dispatch")
        tag_cache = TagCache(redis.Redis.from_url(redis_url), key_prefix)
        names = [image.rsplit(":", 1)[0] for image in images]
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            scanned = [n for n in names if (m := tag_cache.meta(n)) and m.scanned_at]
            if len(scanned) == REPOSITORIES:
                break
            time.sleep(0.5)
        assert len(scanned) == REPOSITORIES, (tmp_path / "scanner-0.log").read_text()[-3000:]
        time.sleep(2)  # let any duplicate that was enqueued show up at the registry
        for _ in range(2):
            sender.send_task("scan.dispatch")  # nothing is due any more: no second pass
        time.sleep(2)
        sender.close()
    finally:
        for proc in workers:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in workers:
            proc.wait(timeout=60)
    listings = [r for r in front.seen if r.startswith("GET /v2/fleet/") and "/tags/list" in r]
    per_repo: dict[str, int] = {}
    for request in listings:
        repo = request.split("/v2/", 1)[1].split("/tags/list", 1)[0]
        per_repo[repo] = per_repo.get(repo, 0) + 1
    assert len(per_repo) == REPOSITORIES
    assert set(per_repo.values()) == {1}
    logs = [(tmp_path / f"scanner-{n}.log").read_text() for n in range(2)]
    assert all("scan.repository" in text for text in logs)  # both processes took a share


def test_live_workloads_are_scanned_too(
    redis_url: str,
    key_prefix: str,
    kube: KubeServer,
    kube_api_client: k8s.ApiClient,
    kube_namespace: str,
) -> None:
    config = {
        "redis_url": redis_url,
        "key_prefix": key_prefix,
        "pipelines": [
            {
                "name": "live",
                "git": {"url": "file:///unused.git"},
                "cluster": {
                    "kubeconfig": str(kube.kubeconfig),
                    "default_namespace": kube_namespace,
                },
            }
        ],
    }
    settings = parse_settings(yaml.safe_dump(config), "test", {})
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    keys = Keys(key_prefix)
    rendered = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "in-git", "annotations": {"fluxcd.io/tag.app": "semver:~1"}},
        "spec": {
            "template": {
                "spec": {"containers": [{"name": "app", "image": "quay.io/team/in-git:1.0"}]}
            }
        },
    }
    artifact = keys.artifact("live-test")
    artifacts.store(client, artifact, "live", "x", [Manifest(rendered, "d.yaml")], 3600)
    client.hset(keys.sync("live"), "artifact", artifact)
    k8s.AppsV1Api(kube_api_client).create_namespaced_deployment(
        kube_namespace,
        {
            "metadata": {"name": "only-live"},
            "spec": {
                "selector": {"matchLabels": {"app": "x"}},
                "template": {
                    "metadata": {"labels": {"app": "x"}},
                    "spec": {
                        "containers": [{"name": "sidecar", "image": "ghcr.io/org/sidecar:2.1"}]
                    },
                },
            },
        },
    )
    runtime.init(settings)
    assert repository_filters(settings) == {
        "quay.io/team/in-git": {"semver:~1"},
        "ghcr.io/org/sidecar": {"glob:*"},
    }


def test_image_pull_secrets_authenticate_the_scan(
    redis_url: str,
    key_prefix: str,
    kube: KubeServer,
    kube_api_client: k8s.ApiClient,
    kube_namespace: str,
    tmp_path: Path,
) -> None:
    private = start_registry(tmp_path / "private", htpasswd_users={"puller": "pull-pw"})
    try:
        push_image(private.url, "team/private", "v1", _when(1), auth=("puller", "pull-pw"))
        token = base64.b64encode(b"puller:pull-pw").decode()
        k8s.CoreV1Api(kube_api_client).create_namespaced_secret(
            kube_namespace,
            {
                "metadata": {"name": "regcred"},
                "type": "kubernetes.io/dockerconfigjson",
                "data": {
                    ".dockerconfigjson": base64.b64encode(
                        json.dumps({"auths": {private.host: {"auth": token}}}).encode()
                    ).decode()
                },
            },
        )
        name = "private"
        config = {
            "redis_url": redis_url,
            "key_prefix": key_prefix,
            "registry": {"insecure_hosts": [private.host]},
            "pipelines": [
                {
                    "name": name,
                    "git": {"url": "file:///unused.git"},
                    "cluster": {
                        "kubeconfig": str(kube.kubeconfig),
                        "default_namespace": kube_namespace,
                    },
                }
            ],
        }
        settings = parse_settings(yaml.safe_dump(config), "test", {})
        workload = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "private-app"},
            "spec": {
                "template": {
                    "spec": {
                        "imagePullSecrets": [{"name": "regcred"}],
                        "containers": [{"name": "app", "image": f"{private.host}/team/private:v1"}],
                    }
                }
            },
        }
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        keys = Keys(key_prefix)
        artifacts.store(
            client, keys.artifact("private"), name, "x", [Manifest(workload, "d.yaml")], 3600
        )
        client.hset(keys.sync(name), "artifact", keys.artifact("private"))
        runtime.init(settings)
        repo = f"{private.host}/team/private"
        filters, users, secrets = repository_plans(settings)[repo]
        assert secrets == {f"{name}/{kube_namespace}/regcred"}
        # The task body is called directly: this checks where credentials come from, not queueing.
        refused = scan.repository(repo, sorted(filters), sorted(users), [])
        assert "authentication required" in refused["error"]
        scanned = scan.repository(repo, sorted(filters), sorted(users), sorted(secrets))
        assert scanned.get("error") is None, scanned
        assert scanned["tags"] == 1
    finally:
        private.stop()


def test_moved_tags_are_seen_when_digests_are_due(
    registry: RegistryServer, tag_cache: TagCache, key_prefix: str
) -> None:
    repository = f"scan/{key_prefix.strip(':')}-moving"
    first = push_image(registry.url, repository, "latest", _when(1))
    name = f"{registry.host}/{repository}"
    start = time.time()
    with RegistryClient(registry.host, insecure=True) as client:
        scan_repository(client, tag_cache, name, repository, lambda tags: tags, start)
    assert tag_cache.get_tags(name) == {"latest": first}
    second = push_image(registry.url, repository, "latest", _when(2))
    assert second != first

    with RegistryClient(registry.host, insecure=True) as client:
        scan_repository(client, tag_cache, name, repository, lambda tags: tags, start + 60)
        assert client.requests == 1  # digests are not due: the tag list only
    assert tag_cache.get_tags(name) == {"latest": first}

    due = start + 3600 + 1
    with RegistryClient(registry.host, insecure=True) as client:
        result = scan_repository(client, tag_cache, name, repository, lambda tags: tags, due)
        assert client.requests == 4  # list, HEAD of latest, its new manifest and config
    assert result.digests_moved
    assert tag_cache.get_tags(name) == {"latest": second}
    image = tag_cache.get_image(second)
    assert image is not None and image.created == _when(2)
    meta = tag_cache.client.hgetall(f"{key_prefix}reg:meta:{name}")
    assert float(meta[b"digests_interval"]) == 1800.0  # a moved tag halves the interval
