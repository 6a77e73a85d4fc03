"""End to end: a real Celery worker on real Redis syncs a bare git repo to a real API server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from celery.contrib.testing.worker import start_worker
from kubernetes import client as k8s

from gitops_pipeline import runtime
from gitops_pipeline.celery_app import app, configure
from gitops_pipeline.config import Pipeline, Settings, parse_settings
from gitops_pipeline.events import recent
from gitops_pipeline.store import Keys
from gitops_pipeline.tasks import sync
from gitops_pipeline.testbed.gitremote import GitRemote
from gitops_pipeline.testbed.kube import KubeServer
from gitops_pipeline.testbed.redis_server import RedisServer

EXAMPLE = Path(__file__).parents[2] / "examples" / "sample-app-deployment"
SYNC_WAIT = 90.0  # an upper bound for the wait, not a speed check


@pytest.fixture(scope="module")
def worker(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """One real Celery worker (solo pool, in this process) for the module's tests.

    Celery binds a process to one broker, so tests share the Redis and key prefix and each
    test gets its own pipeline (own name, git remote and namespace) added to the settings.
    """
    base = parse_settings(
        yaml.safe_dump(
            {
                "redis_url": redis_server.url,
                "key_prefix": "e2e:",
                "work_dir": str(tmp_path_factory.mktemp("work")),
            }
        ),
        "test-config",
        {},
    )
    configure(base)
    with start_worker(
        app, pool="solo", queues=["sync", "default"], perform_ping_check=False, shutdown_timeout=30
    ):
        yield base


@dataclass
class Env:
    settings: Settings
    remote: GitRemote
    namespace: str
    name: str

    def sync(self) -> dict[str, Any]:
        """Trigger a sync and wait for its result to be recorded (finished or failed)."""
        client = redis.Redis.from_url(self.settings.redis_url, decode_responses=True)
        key = Keys(self.settings.key_prefix).sync(self.name)
        client.delete(key)
        sync.trigger.delay(self.name)
        deadline = time.monotonic() + SYNC_WAIT
        while time.monotonic() < deadline:
            state = client.hgetall(key)
            if state.get("status") in {"synced", "synced-with-errors", "failed"}:
                return state
            time.sleep(0.2)
        raise AssertionError(f"no sync result within {SYNC_WAIT}s: {client.hgetall(key)}")

    def events(self) -> list[str]:
        client = redis.Redis.from_url(self.settings.redis_url, decode_responses=True)
        return [e.message for e in recent(client, Keys(self.settings.key_prefix), self.name)]


@pytest.fixture
def env(
    worker: Settings, kube: KubeServer, kube_namespace: str, key_prefix: str, tmp_path: Path
) -> Env:
    remote = GitRemote(tmp_path / "git")
    remote.commit_tree(EXAMPLE, "sample-app v0.1")
    name = f"app-{key_prefix.strip(':')}"
    pipeline = {
        "name": name,
        "git": {"url": remote.url, "branch": "master"},
        "cluster": {"kubeconfig": str(kube.kubeconfig), "default_namespace": kube_namespace},
    }
    settings = worker.model_copy(update={"pipelines": [Pipeline.model_validate(pipeline)]})
    runtime.init(settings)
    return Env(settings, remote, kube_namespace, name)


def _image(kube_client: k8s.ApiClient, namespace: str) -> str:
    deployment = k8s.AppsV1Api(kube_client).read_namespaced_deployment("sample-app", namespace)
    return str(deployment.spec.template.spec.containers[0].image)


def test_sample_app_syncs_and_follows_git(env: Env, kube_api_client: k8s.ApiClient) -> None:
    remote, namespace = env.remote, env.namespace
    state = env.sync()
    assert state["status"] == "synced", state
    assert state["applied"] == "2"
    assert state["revision"] == remote.head()
    assert _image(kube_api_client, namespace) == "gitopsbook/sample-app:v0.1"
    service = k8s.CoreV1Api(kube_api_client).read_namespaced_service("sample-app", namespace)
    assert service.spec.ports[0].target_port == 8080
    managers = (
        k8s.AppsV1Api(kube_api_client)
        .read_namespaced_deployment("sample-app", namespace)
        .metadata.managed_fields
    )
    assert any(m.manager == "gitops-pipeline" and m.operation == "Apply" for m in managers)

    text = (EXAMPLE / "deployment.yaml").read_text().replace("v0.1", "v0.2")
    new_head = remote.commit({"deployment.yaml": text}, "sample-app v0.2")
    state = env.sync()
    assert state["status"] == "synced", state
    assert state["revision"] == new_head
    assert _image(kube_api_client, namespace) == "gitopsbook/sample-app:v0.2"


def test_bad_revision_is_reported_and_nothing_is_applied(
    env: Env, kube_api_client: k8s.ApiClient
) -> None:
    remote, namespace = env.remote, env.namespace
    assert env.sync()["status"] == "synced"

    # One good change and one broken file in the same revision: nothing of it may be applied.
    text = (EXAMPLE / "deployment.yaml").read_text().replace("v0.1", "v0.3")
    remote.commit({"deployment.yaml": text, "broken.yaml": "kind: [\n"}, "half broken")
    state = env.sync()
    assert state["status"] == "failed"
    assert state["error"].startswith("generate failed: broken.yaml:2:")
    assert _image(kube_api_client, namespace) == "gitopsbook/sample-app:v0.1"
    assert any(m.startswith("generate failed: broken.yaml:2:") for m in env.events())

    # The worker keeps serving: fixing the file syncs again.
    remote.commit({"broken.yaml": None}, "fix")
    assert env.sync()["status"] == "synced"
    assert _image(kube_api_client, namespace) == "gitopsbook/sample-app:v0.3"


def test_per_object_errors_do_not_stop_the_others(env: Env, kube_api_client: k8s.ApiClient) -> None:
    remote, namespace = env.remote, env.namespace
    bad = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "Not_A_Valid_Name"},
        "data": {"a": "b"},
    }
    remote.commit({"bad-configmap.yaml": yaml.safe_dump(bad)}, "invalid object name")
    state = env.sync()
    assert state["status"] == "synced-with-errors"
    assert state["applied"] == "2"
    errors = json.loads(state["errors"])
    assert list(errors) == [f"{namespace}:ConfigMap/Not_A_Valid_Name"]
    assert "422" in errors[f"{namespace}:ConfigMap/Not_A_Valid_Name"]
    assert _image(kube_api_client, namespace) == "gitopsbook/sample-app:v0.1"
