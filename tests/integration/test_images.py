"""list-images over a real scan of the real registry."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import redis

from gitops_pipeline.images import list_images
from gitops_pipeline.registry.cache import TagCache
from gitops_pipeline.registry.client import RegistryClient
from gitops_pipeline.registry.scan import scan_repository
from gitops_pipeline.testbed.registry import RegistryServer, push_image

CREATED = {"v0.1": 1, "v0.1.1": 3, "v0.2": 2, "v1.0": 4, "latest": 5}


def _deployment(image: str, annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "sample-app", "annotations": annotations},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}},
    }


def test_tags_newest_first_with_the_running_one_marked(
    registry: RegistryServer, redis_url: str, key_prefix: str
) -> None:
    repository = f"list/{key_prefix.strip(':')}-sample-app"
    for tag, day in CREATED.items():
        push_image(registry.url, repository, tag, datetime(2024, 1, day, tzinfo=UTC))
    cache = TagCache(redis.Redis.from_url(redis_url), key_prefix)
    name = f"{registry.host}/{repository}"
    with RegistryClient(registry.host, insecure=True) as client:
        scan_repository(client, cache, name, repository, lambda tags: tags, time.time())
    image = f"{name}:v0.1"

    semver = list_images([_deployment(image, {"fluxcd.io/tag.app": "semver:~0.1"})], "web", cache)
    assert [(c.workload, c.container, c.filter) for c in semver] == [
        ("web:Deployment/sample-app", "app", "semver:~0.1")
    ]
    assert [(t.tag, t.running) for t in semver[0].tags] == [("v0.1.1", False), ("v0.1", True)]

    by_created = list_images([_deployment(image, {})], "web", cache)[0]
    assert by_created.filter == "glob:*"
    assert [t.tag for t in by_created.tags] == ["latest", "v1.0", "v0.1.1", "v0.2", "v0.1"]
    assert by_created.tags[0].created == datetime(2024, 1, 5, tzinfo=UTC)
    assert all(t.digest and t.digest.startswith("sha256:") for t in by_created.tags)

    limited = list_images([_deployment(image, {})], "web", cache, limit=2)[0]
    assert [t.tag for t in limited.tags] == ["latest", "v1.0"]
    other = list_images([_deployment(image, {})], "web", cache, workload="web:Deployment/nope")
    assert other == []
