"""Operations through the REST API with a real worker: automate, release, policy, jobs.

Real Redis (broker and state), real git remote, real registry and the test-bed API server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
import test_sync_e2e as e2e
import yaml
from celery.contrib.testing.worker import start_worker
from fastapi.testclient import TestClient
from kubernetes import client as k8s

from gitops_pipeline import jobs, runtime
from gitops_pipeline.api.app import create_app
from gitops_pipeline.celery_app import app
from gitops_pipeline.config import Pipeline, Settings, parse_settings
from gitops_pipeline.errors import PermanentError
from gitops_pipeline.registry.cache import TagCache
from gitops_pipeline.store import Keys
from gitops_pipeline.tasks import automation, operations, scan, sync
from gitops_pipeline.testbed.gitremote import GitRemote, run_git
from gitops_pipeline.testbed.kube import KubeServer
from gitops_pipeline.testbed.redis_server import RedisServer
from gitops_pipeline.testbed.registry import RegistryServer, push_image

WAIT = 120.0  # upper bound for a wait, not a speed check
ADMIN = "ops-admin-token"
HEADERS = {"Authorization": f"Bearer {ADMIN}"}

DEPLOYMENT = """\
# {name}: kept by hand; comments and layout must survive the operator's edits.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
        - name: {name}
          image: {image}   # the running tag
"""


@pytest.fixture(scope="module")
def worker(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    api = {"tokens": [{"token": ADMIN, "scope": "admin"}]}
    base = e2e.worker_settings(redis_server.url, tmp_path_factory.mktemp("work"), api=api)
    queues = ["sync", "default", "scan", "automation"]
    with start_worker(
        app,
        pool="threads",
        concurrency=4,
        queues=queues,
        perform_ping_check=False,
        shutdown_timeout=30,
    ):
        yield base


def _wait(predicate: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Setup:
    def __init__(self, settings: Settings, remote: GitRemote, name: str) -> None:
        self.settings = settings
        self.remote = remote
        self.name = name
        self.api = TestClient(create_app(settings))
        self.redis = redis.Redis.from_url(settings.redis_url, decode_responses=True)
        self.keys = Keys(settings.key_prefix)

    def post(self, path: str, body: dict[str, Any]) -> str:
        response = self.api.post(
            f"/api/v1/pipelines/{self.name}/{path}", json=body, headers=HEADERS
        )
        assert response.status_code == 202, response.text
        return str(response.json()["job"])

    def job(self, job_id: str, until: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            found: dict[str, Any] = self.api.get(f"/api/v1/jobs/{job_id}", headers=HEADERS).json()
            return found if until(found) else None

        return dict(_wait(done, f"job {job_id}"))

    def finished(self, job_id: str) -> dict[str, Any]:
        return self.job(job_id, lambda j: j["status"] in ("succeeded", "failed"))

    def subjects(self) -> list[str]:
        log = run_git("log", "--format=%s", "refs/heads/master", cwd=self.remote.bare)
        return log.splitlines()

    def file(self, path: str) -> str:
        return run_git("show", f"refs/heads/master:{path}", cwd=self.remote.bare)


def _setup(
    worker: Settings,
    kube: KubeServer,
    namespace: str,
    tmp_path: Path,
    name: str,
    files: dict[str, str],
    registry: RegistryServer | None = None,
    readonly: bool = False,
) -> Setup:
    remote = GitRemote(tmp_path / "git")
    remote.commit(dict(files), "workloads")
    pipeline = Pipeline.model_validate(
        {
            "name": name,
            "git": {
                "url": remote.url,
                "user": "Flux Bot",
                "email": "bot@example.com",
                "readonly": readonly,
            },
            "cluster": {"kubeconfig": str(kube.kubeconfig), "default_namespace": namespace},
        }
    )
    hosts = [registry.host] if registry else []
    registry_settings = worker.registry.model_copy(update={"insecure_hosts": hosts})
    settings = worker.model_copy(update={"pipelines": [pipeline], "registry": registry_settings})
    runtime.init(settings)
    setup = Setup(settings, remote, name)
    sync.trigger.delay(name)
    _wait(lambda: setup.redis.hget(setup.keys.sync(name), "status") == "synced", "first sync")
    return setup


class SampleApp:
    """The seed's sample-app at v0.1 with v0.2 in the registry, synced and scanned."""

    def __init__(
        self,
        worker: Settings,
        registry: RegistryServer,
        kube: KubeServer,
        namespace: str,
        api: k8s.ApiClient,
        tmp_path: Path,
        name: str,
    ) -> None:
        repository = f"gitopsbook/{name}-sample-app"
        for tag, day in {"v0.1": 1, "v0.2": 2}.items():
            push_image(registry.url, repository, tag, datetime(2024, 1, day, tzinfo=UTC))
        self.image = f"{registry.host}/{repository}"
        self.original = DEPLOYMENT.format(name="sample-app", image=f"{self.image}:v0.1")
        files = {"sample-app-deployment.yaml": self.original}
        self.setup = _setup(worker, kube, namespace, tmp_path, name, files, registry)
        scan.dispatch.delay()  # what the beat's scan tick does
        settings = self.setup.settings
        tags = TagCache(redis.Redis.from_url(settings.redis_url), settings.key_prefix)
        _wait(lambda: (m := tags.meta(self.image)) is not None and m.scanned_at, "the scan")
        self._apps = k8s.AppsV1Api(api)
        self._namespace = namespace

    def running(self) -> str:
        """The image the Deployment in the API server runs."""
        found = self._apps.read_namespaced_deployment("sample-app", self._namespace)
        return str(found.spec.template.spec.containers[0].image)


def test_automate_commits_the_annotation_then_the_image(
    worker: Settings,
    registry: RegistryServer,
    kube: KubeServer,
    kube_namespace: str,
    kube_api_client: k8s.ApiClient,
    key_prefix: str,
    tmp_path: Path,
) -> None:
    """The seed walkthrough: sample-app runs v0.1, v0.2 is in the registry; automate -> two
    commits (annotation, then image) -> the Deployment in the API server runs v0.2."""
    app = SampleApp(
        worker,
        registry,
        kube,
        kube_namespace,
        kube_api_client,
        tmp_path,
        f"walk-{key_prefix.strip(':')}",
    )
    setup, image, original, running = app.setup, app.image, app.original, app.running
    assert running() == f"{image}:v0.1"

    workload = f"{kube_namespace}:deployment/sample-app"
    job_id = setup.post("policy", {"workloads": [workload], "automate": True})
    job = setup.finished(job_id)
    assert job["status"] == "succeeded", job
    assert job["result"]["results"][0]["status"] == "success"
    _wait(lambda: running() == f"{image}:v0.2", "v0.2 in the API server")

    subjects = setup.subjects()
    assert subjects[:2] == [f"Auto-release {image}:v0.2", f"Automated: {workload}"]
    assert job["sha"] == run_git("rev-parse", "refs/heads/master~1", cwd=setup.remote.bare)
    applied = setup.job(job_id, lambda j: j["sync"] == "applied")
    assert applied["applied_revision"] in {
        run_git("rev-parse", ref, cwd=setup.remote.bare)
        for ref in ("refs/heads/master", "refs/heads/master~1")
    }
    edited = setup.file("sample-app-deployment.yaml")
    annotated = '  name: sample-app\n  annotations:\n    fluxcd.io/automated: "true"\n'
    expected = original.replace("  name: sample-app\n", annotated, 1)
    # Byte for byte outside the added annotation and the tag (`run_git` strips the last newline).
    assert edited + "\n" == expected.replace(f"{image}:v0.1", f"{image}:v0.2")


def test_release_dry_run_locks_force_and_refusals(
    worker: Settings, kube: KubeServer, kube_namespace: str, key_prefix: str, tmp_path: Path
) -> None:
    image = "registry.invalid/team/app"
    files = {
        "web.yaml": DEPLOYMENT.format(name="web", image=f"{image}:1.0"),
        "held.yaml": DEPLOYMENT.format(name="held", image=f"{image}:1.0"),
    }
    name = f"rel-{key_prefix.strip(':')}"
    setup = _setup(worker, kube, kube_namespace, tmp_path, name, files)
    web, held = (f"{kube_namespace}:deployment/{w}" for w in ("web", "held"))
    locking = {"workloads": [held], "lock": True, "user": "ann", "message": "incident 7"}
    lock = setup.finished(setup.post("policy", locking))
    assert lock["status"] == "succeeded" and lock["sha"]
    assert setup.subjects()[0] == f"Locked: {held}"

    before = run_git("rev-parse", "refs/heads/master", cwd=setup.remote.bare)
    dry = setup.finished(
        setup.post("release", {"all": True, "image": f"{image}:1.1", "dry_run": True})
    )
    outcome = {r["workload"]: (r["status"], r["error"]) for r in dry["result"]["results"]}
    assert outcome == {
        f"{kube_namespace}:Deployment/web": ("success", ""),
        f"{kube_namespace}:Deployment/held": ("skipped", "locked by ann: incident 7"),
    }
    assert dry["sha"] == "" and dry["result"]["dry_run"] is True
    assert run_git("rev-parse", "refs/heads/master", cwd=setup.remote.bare) == before

    real = setup.finished(setup.post("release", {"all": True, "image": f"{image}:1.1"}))
    assert real["status"] == "succeeded" and real["sha"]
    assert f"image: {image}:1.1   # the running tag" in setup.file("web.yaml")
    assert f"image: {image}:1.0" in setup.file("held.yaml")

    forced = setup.finished(
        setup.post("release", {"workloads": [held], "image": f"{image}:1.1", "force": True})
    )
    assert forced["status"] == "succeeded"
    assert f"image: {image}:1.1" in setup.file("held.yaml")
    assert setup.subjects()[0] == f"Release {image}:1.1"

    nope = f"{kube_namespace}:deployment/nope"
    missing = setup.finished(
        setup.post("release", {"workloads": [web, nope], "image": f"{image}:1.2"})
    )
    assert missing["status"] == "failed" and "not found" in missing["error"]
    assert f"image: {image}:1.1" in setup.file("web.yaml")  # all or nothing

    queue = f"{setup.settings.key_prefix}celery:automation"
    queued = setup.redis.llen(queue)
    for body in (
        {"workloads": [web], "tags": {"web": "semver:not-a-range"}},
        {"workloads": [web], "tag_all": "regex:(unclosed"},
        {"workloads": ["web"], "automate": True},
        {"workloads": [web]},
    ):
        response = setup.api.post(f"/api/v1/pipelines/{name}/policy", json=body, headers=HEADERS)
        assert response.status_code == 400, (body, response.text)
    for body in (
        {"all": True, "workloads": [web]},
        {"image": f"{image}:2"},
        {"all": True, "image": image},
    ):
        response = setup.api.post(f"/api/v1/pipelines/{name}/release", json=body, headers=HEADERS)
        assert response.status_code == 400, (body, response.text)
    assert setup.redis.llen(queue) == queued  # nothing was enqueued
    unknown = setup.api.get("/api/v1/jobs/nope", headers=HEADERS)
    assert unknown.status_code == 404


def test_twenty_concurrent_operations_and_outside_pushes_all_land(
    worker: Settings, kube: KubeServer, kube_namespace: str, key_prefix: str, tmp_path: Path
) -> None:
    image = "registry.invalid/team/app"
    names = [f"w{i}" for i in range(10)]
    files = {
        f"pair{i // 2}.yaml": "---\n".join(
            DEPLOYMENT.format(name=n, image=f"{image}:1.0") for n in names[i : i + 2]
        )
        for i in range(0, 10, 2)
    }
    files["notes.txt"] = "start\n"
    name = f"conc-{key_prefix.strip(':')}"
    setup = _setup(worker, kube, kube_namespace, tmp_path, name, files)
    start = setup.subjects()

    # 8 releases, 10 policy changes and 2 automation bumps, all queued at once.
    job_ids: list[str] = []
    bumps = []
    for n in names:
        workload = f"{kube_namespace}:Deployment/{n}"
        if n in ("w8", "w9"):
            change = {"workload": workload, "container": n, "image": f"{image}:{n}"}
            bumps.append(automation.bump.delay([change], name))
        else:
            body = {"workloads": [workload], "image": f"{image}:{n}"}
            job_ids.append(setup.post("release", body))
        job_ids.append(setup.post("policy", {"workloads": [workload], "tags": {n: "glob:w*"}}))

    def outside() -> None:
        for i in range(5):
            notes = setup.remote.work / "notes.txt"
            for _attempt in range(20):
                run_git("pull", "--quiet", "--rebase", "origin", "master", cwd=setup.remote.work)
                notes.write_text(notes.read_text() + f"outside {i}\n")
                run_git("commit", "--quiet", "-am", f"outside {i}", cwd=setup.remote.work)
                try:
                    run_git("push", "--quiet", "origin", "HEAD:master", cwd=setup.remote.work)
                    break
                except RuntimeError:
                    run_git("reset", "--quiet", "--hard", "origin/master", cwd=setup.remote.work)
            else:
                raise AssertionError("outside push never landed")

    pusher = threading.Thread(target=outside)
    pusher.start()
    results = [setup.finished(j) for j in job_ids]
    bumped = [bump.get(timeout=WAIT) for bump in bumps]
    pusher.join()

    assert [r["status"] for r in results] == ["succeeded"] * 18, [r["error"] for r in results]
    assert all(b["sha"] for b in bumped), bumped
    results += bumped
    assert all(r["sha"] for r in results)
    bare = setup.remote.bare
    assert run_git("rev-list", "--merges", "refs/heads/master", cwd=bare) == ""
    subjects = setup.subjects()
    assert len(subjects) == len(start) + 25
    assert sorted(s for s in subjects if s.startswith("outside")) == [
        f"outside {i}" for i in range(5)
    ]
    shas = set(run_git("rev-list", "refs/heads/master", cwd=bare).splitlines())
    assert {r["sha"] for r in results} <= shas
    for i in range(0, 10, 2):
        text = setup.file(f"pair{i // 2}.yaml")
        for n in names[i : i + 2]:
            assert f"image: {image}:{n}   # the running tag" in text
            assert f"fluxcd.io/tag.{n}: glob:w*" in text
    assert setup.file("notes.txt").count("outside") == 5
    assert {f"Auto-release {image}:w8", f"Auto-release {image}:w9"} <= set(subjects)


def test_read_only_pipeline_refuses_writes_but_plans(redis_url: str, key_prefix: str) -> None:
    config = {
        "redis_url": redis_url,
        "key_prefix": key_prefix,
        "api": {"tokens": [{"token": ADMIN, "scope": "admin"}]},
        "pipelines": [{"name": "ro", "git": {"url": "file:///srv/ro.git", "readonly": True}}],
    }
    api = TestClient(create_app(parse_settings(yaml.safe_dump(config), "test", {})))
    workload = "default:deployment/web"
    refused = [
        api.post(
            "/api/v1/pipelines/ro/policy",
            json={"workloads": [workload], "lock": True},
            headers=HEADERS,
        ),
        api.post(
            "/api/v1/pipelines/ro/release", json={"all": True, "image": "a/b:1"}, headers=HEADERS
        ),
    ]
    for response in refused:
        assert response.status_code == 409 and "read-only" in response.json()["detail"]
    planned = api.post(
        "/api/v1/pipelines/ro/release",
        headers=HEADERS,
        json={"all": True, "image": "a/b:1", "dry_run": True},
    )
    assert planned.status_code == 202
    job = api.get(f"/api/v1/jobs/{planned.json()['job']}", headers=HEADERS).json()
    assert job["status"] == "queued" and job["request"]["dry_run"] is True


def test_redelivered_jobs_keep_their_outcome_and_bad_jobs_fail_whole(
    worker: Settings, kube: KubeServer, kube_namespace: str, key_prefix: str, tmp_path: Path
) -> None:
    image = "registry.invalid/team/app"
    name = f"redo-{key_prefix.strip(':')}"
    files = {"web.yaml": DEPLOYMENT.format(name="web", image=f"{image}:1.0")}
    setup = _setup(worker, kube, kube_namespace, tmp_path, name, files)
    web = f"{kube_namespace}:deployment/web"
    prefix = setup.settings.key_prefix

    done = setup.finished(setup.post("release", {"workloads": [web], "image": f"{image}:2.0"}))
    assert done["status"] == "succeeded" and done["sha"], done
    # The worker died after the push, before finishing the job: the broker redelivers.
    jobs.update(setup.redis, prefix, done["id"], status="running")
    operations.release.delay(done["id"], name).get(timeout=WAIT)
    again = setup.finished(done["id"])
    assert (again["sha"], again["result"]) == (done["sha"], done["result"])
    # A redelivery of a finished (and applied, so nothing else changes it) job changes nothing.
    setup.job(done["id"], lambda j: j["sync"] == "applied")
    before = setup.redis.hgetall(jobs.job_key(prefix, done["id"]))
    assert operations.release.delay(done["id"], name).get(timeout=WAIT)["redelivered"] is True
    assert setup.redis.hgetall(jobs.job_key(prefix, done["id"])) == before

    # A job that expired before it ran fails without leaving a partial job behind.
    failed = operations.release.apply_async(args=["expired-job", name])
    with pytest.raises(PermanentError, match="unknown or expired"):
        failed.get(timeout=WAIT)
    assert setup.redis.exists(jobs.job_key(prefix, "expired-job")) == 0

    head = run_git("rev-parse", "refs/heads/master", cwd=setup.remote.bare)
    for body, error in (
        ({"workloads": [web], "tags": {"nope": "semver:~1"}}, "web has no container nope"),
        ({"workloads": [f"{kube_namespace}:deployment/gone"], "lock": True}, "not found"),
    ):
        job = setup.finished(setup.post("policy", body))
        assert job["status"] == "failed" and error in job["error"], job
    # A request that reached the worker malformed (the API checks first) fails the job.
    job_id = jobs.create(setup.redis, prefix, name, "release", {"all": True, "workloads": [web]})
    app.send_task("automation.release", args=[job_id, name])
    job = setup.finished(job_id)
    assert job["status"] == "failed" and "not both" in job["error"], job
    assert run_git("rev-parse", "refs/heads/master", cwd=setup.remote.bare) == head


def test_a_read_only_pipeline_job_fails_in_the_worker_too(
    worker: Settings, kube: KubeServer, kube_namespace: str, key_prefix: str, tmp_path: Path
) -> None:
    image = "registry.invalid/team/app"
    name = f"ro-{key_prefix.strip(':')}"
    files = {"web.yaml": DEPLOYMENT.format(name="web", image=f"{image}:1.0")}
    setup = _setup(worker, kube, kube_namespace, tmp_path, name, files, readonly=True)
    web = f"{kube_namespace}:deployment/web"
    prefix = setup.settings.key_prefix
    head = run_git("rev-parse", "refs/heads/master", cwd=setup.remote.bare)
    request = {"workloads": [web], "image": f"{image}:2.0"}
    job_id = jobs.create(setup.redis, prefix, name, "release", request)
    app.send_task("automation.release", args=[job_id, name])
    job = setup.finished(job_id)
    assert job["status"] == "failed" and "read-only" in job["error"], job
    planned = jobs.create(setup.redis, prefix, name, "release", {**request, "dry_run": True})
    app.send_task("automation.release", args=[planned, name])
    job = setup.finished(planned)
    assert job["status"] == "succeeded" and job["result"]["results"][0]["status"] == "success"
    assert run_git("rev-parse", "refs/heads/master", cwd=setup.remote.bare) == head
