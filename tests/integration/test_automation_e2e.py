"""The seed walkthrough, end to end: a new tag in the registry becomes a commit in Git and then
the image of the Deployment in the API server. Real worker, Redis, registry, git, API server."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
import test_operations as ops
from kubernetes import client as k8s

from gitops_pipeline import runtime
from gitops_pipeline.config import Pipeline, Settings
from gitops_pipeline.events import recent
from gitops_pipeline.registry.cache import TagCache
from gitops_pipeline.store import Keys
from gitops_pipeline.tasks import automation, scan, sync
from gitops_pipeline.testbed.gitremote import GitRemote, run_git
from gitops_pipeline.testbed.kube import KubeServer
from gitops_pipeline.testbed.registry import RegistryServer, push_image

DEPLOYMENT = """\
# The sample app, as in the seed's sample-app-deployment repository.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: sample-app
  annotations:
    fluxcd.io/automated: 'true'   # automate this workload
    fluxcd.io/tag.sample-app: "{filter}"
spec:
  replicas: 1
  selector:
    matchLabels: {{app: sample-app}}
  template:
    metadata:
      labels:
        app: sample-app
    spec:
      containers:
        - name: sample-app
          image: {image}
          ports:
            - containerPort: 8080
"""


worker = ops.worker  # a real worker on every queue (found by this name)


_wait = ops._wait


@pytest.mark.parametrize(
    ("tag_filter", "expected"), [("glob:*", "v0.2"), ("semver:~0.1", "v0.1.1")]
)
def test_new_tag_is_committed_and_applied(
    worker: Settings,
    registry: RegistryServer,
    kube: KubeServer,
    kube_namespace: str,
    kube_api_client: k8s.ApiClient,
    key_prefix: str,
    tmp_path: Path,
    tag_filter: str,
    expected: str,
) -> None:
    repository = f"gitopsbook/{key_prefix.strip(':')}-sample-app"
    for tag, day in {"v0.1": 1, "v0.1.1": 2, "v0.2": 3}.items():
        push_image(registry.url, repository, tag, datetime(2024, 1, day, tzinfo=UTC))
    image = f"{registry.host}/{repository}"
    remote = GitRemote(tmp_path / "git")
    original = DEPLOYMENT.format(filter=tag_filter, image=f"{image}:v0.1")
    remote.commit({"deployment.yaml": original}, "sample-app, automated")
    name = f"auto-{key_prefix.strip(':')}"
    pipeline = Pipeline.model_validate(
        {
            "name": name,
            "git": {"url": remote.url, "user": "Flux Bot", "email": "bot@example.com"},
            "cluster": {"kubeconfig": str(kube.kubeconfig), "default_namespace": kube_namespace},
        }
    )
    registry_settings = worker.registry.model_copy(update={"insecure_hosts": [registry.host]})
    settings = worker.model_copy(update={"pipelines": [pipeline], "registry": registry_settings})
    runtime.init(settings)
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    keys = Keys(settings.key_prefix)
    apps = k8s.AppsV1Api(kube_api_client)

    def running() -> str:
        return str(
            apps.read_namespaced_deployment("sample-app", kube_namespace)
            .spec.template.spec.containers[0]
            .image
        )

    sync.trigger.delay(name)
    _wait(lambda: client.hget(keys.sync(name), "status") == "synced", "the first sync")
    assert running() == f"{image}:v0.1"

    scan.dispatch.delay()
    tags = TagCache(redis.Redis.from_url(settings.redis_url), settings.key_prefix)
    _wait(lambda: (m := tags.meta(image)) is not None and m.scanned_at, "the scan")
    automation.plan.delay(name)
    _wait(lambda: running() == f"{image}:{expected}", f"{expected} in the API server")

    run_git("pull", "--quiet", "origin", "master", cwd=remote.work)
    subjects = run_git("log", "--format=%an <%ae>|%s", cwd=remote.work).splitlines()
    assert subjects[0] == f"Flux Bot <bot@example.com>|Auto-release {image}:{expected}"
    edited = (remote.work / "deployment.yaml").read_text()
    assert edited == original.replace(f"{image}:v0.1", f"{image}:{expected}")
    messages = [e.message for e in recent(client, keys, name)]
    assert any(m.startswith("Commit pushed: ") for m in messages)

    # A tag pushed later: the scan finds it new and starts automation on its own.
    if tag_filter == "glob:*":
        push_image(registry.url, repository, "v0.3", datetime(2024, 1, 9, tzinfo=UTC))
        scan.repository.delay(image, [tag_filter], [name])
        _wait(lambda: running() == f"{image}:v0.3", "v0.3 in the API server")


def test_locked_workload_is_left_alone(
    worker: Settings,
    registry: RegistryServer,
    kube: KubeServer,
    kube_namespace: str,
    key_prefix: str,
    tmp_path: Path,
) -> None:
    repository = f"gitopsbook/{key_prefix.strip(':')}-locked"
    for tag, day in {"v0.1": 1, "v0.2": 2}.items():
        push_image(registry.url, repository, tag, datetime(2024, 1, day, tzinfo=UTC))
    image = f"{registry.host}/{repository}"
    remote = GitRemote(tmp_path / "git")
    text = DEPLOYMENT.format(filter="glob:*", image=f"{image}:v0.1").replace(
        "    fluxcd.io/automated: 'true'   # automate this workload\n",
        "    fluxcd.io/automated: 'true'\n    fluxcd.io/locked: 'true'\n",
    )
    remote.commit({"deployment.yaml": text}, "locked")
    name = f"locked-{key_prefix.strip(':')}"
    pipeline = Pipeline.model_validate(
        {
            "name": name,
            "git": {"url": remote.url},
            "cluster": {"kubeconfig": str(kube.kubeconfig), "default_namespace": kube_namespace},
        }
    )
    registry_settings = worker.registry.model_copy(update={"insecure_hosts": [registry.host]})
    settings = worker.model_copy(update={"pipelines": [pipeline], "registry": registry_settings})
    runtime.init(settings)
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    keys = Keys(settings.key_prefix)
    sync.trigger.delay(name)
    _wait(lambda: client.hget(keys.sync(name), "status") == "synced", "the sync")
    scan.dispatch.delay()
    tags = TagCache(redis.Redis.from_url(settings.redis_url), settings.key_prefix)
    _wait(lambda: (m := tags.meta(image)) is not None and m.scanned_at, "the scan")
    result = automation.plan.apply_async(args=[name])
    assert _wait(lambda: result.ready(), "the plan") and result.result == []
    assert run_git("rev-parse", "refs/heads/master", cwd=remote.bare) == remote.head()
