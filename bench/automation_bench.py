"""Automation benchmark: new tag -> running image, and fifty concurrent releases on one branch.

Run with ``python -m bench.automation_bench`` (``--quick`` for a smoke run). Everything runs on
the project's real test bed in a temporary directory: a private Redis, etcd + kube-apiserver, a
``docker-registry``, bare git remotes (``gitops_pipeline.testbed``), the three real worker pools
as subprocesses (``python -m workers.sync``, ``workers.scan``, ``workers.automation``, prefork)
and the web process (``python -m gitops_pipeline.api``, uvicorn) for the registry webhook.
Tasks are sent from a Celery app of this process's own, as the web process sends them. What is
started is stopped again by process id, also on Ctrl-C or an error.

1. Automation latency. An automated Deployment (``fluxcd.io/automated: 'true'``, filter
   ``glob:*``) runs ``<registry>/bench/app:v1``. Per round a new tag is pushed to the registry
   (a later created time), then the clock runs from

   - sending ``scan.repository`` (the task the scan dispatcher enqueues), or
   - POSTing an authenticated distribution notification to ``/hooks/distribution`` (which makes
     the repository due and enqueues ``scan.dispatch``)

   to the commit appearing in the git remote (its ref file, polled) and to the Deployment in
   the API server running the new tag (scan -> ``automation.plan`` -> ``automation.bump`` ->
   ``sync.trigger``), as a watch of the Deployment reports it: the clock does not poll the
   API server it measures.
   Target: every round under 3 s. Flux v1's defaults (registry poll and automation every 5
   minutes) are printed as context.

   Baseline, same run, same Deployment: the plain GitOps path for the same change, the new tag
   committed to git by hand, then ``sync.trigger``; clock from the push to the Deployment
   running it. The ratio automation / baseline is the cost of scan + plan + commit.

2. Releases on one branch. A pipeline of ``--releases`` Deployments (five per file) gets one
   release job per Deployment (``--update-image`` of its own image, recorded with
   ``jobs.create`` and sent as ``automation.release``, as the REST API does), while an outside
   clone pushes ``--outside`` commits to the same branch. Measured twice, on two identical
   pipelines: all jobs enqueued at once (concurrent), and one after another (enqueue, wait for
   ``succeeded``, next: the baseline). Checked after each: every job succeeded, every file holds
   its new images, no merge commits, and the branch gained exactly one commit per release and
   per outside push. Writes to one branch hold its lock one at a time (``tasks/gitwrite.py``),
   so concurrency cannot beat about 1.0 here; the ratio shows what it costs, if anything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx
import redis
import yaml
from celery import Celery
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from bench.common import log, poll, run_interruptibly
from gitops_pipeline import jobs
from gitops_pipeline.celery_app import celery_config
from gitops_pipeline.config import Settings, parse_settings
from gitops_pipeline.registry.cache import TagCache
from gitops_pipeline.store import Keys
from gitops_pipeline.testbed.gitremote import GitRemote, run_git
from gitops_pipeline.testbed.kube import KubeServer, start_kube
from gitops_pipeline.testbed.process import ManagedProcess, free_port
from gitops_pipeline.testbed.redis_server import start_redis
from gitops_pipeline.testbed.registry import MANIFEST_V2, RegistryServer, push_image, start_registry

REPO = Path(__file__).resolve().parents[1]

KEY_PREFIX = "bench-auto:"
TAG_FILTER = "glob:*"
APP_REPOSITORY = "bench/app"
AUTO_PIPELINE = "auto"
AUTO_NAMESPACE = "bench-auto"
APP = "app"
APP_FILE = "app.yaml"
SEQ_PIPELINE = "releases-seq"
CONC_PIPELINE = "releases-conc"
PER_FILE = 5

LATENCY_TARGET = 3.0
FLUX_V1_INTERVAL = 300.0  # fluxd --registry-poll-interval and --automation-interval defaults

SYNC_CONCURRENCY = 2
SCAN_CONCURRENCY = 1
POLL_SECONDS = 0.005  # git ref, Redis and watch-record polls (none touches the API server)
WATCH_SECONDS = 5  # each watch request of the Deployment ends after this; then resumes
SETTLE_SECONDS = 0.3  # after a sync, for its trailing automation.plan
OUTSIDE_GAP = 0.3  # seconds between outside pushes
WAIT_SECONDS = 180.0  # upper bound of one wait, so a hung run ends; not a speed check
READY_SECONDS = 120.0
CREATED_BASE = datetime(2024, 1, 1, tzinfo=UTC)
BOT = ("Flux Bot", "bot@example.com")

T = TypeVar("T")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# --- manifests -------------------------------------------------------------------------------

AUTOMATED = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {namespace}
  annotations:
    fluxcd.io/automated: 'true'
    fluxcd.io/tag.{name}: {filter}
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
          image: {image}
          ports:
            - containerPort: 8080
"""

PLAIN = """\
# {name}: one of {count} services; kept by hand, comments must survive the operator's edits.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {namespace}
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
          resources:
            requests: {{cpu: 10m, memory: 16Mi}}
"""

IMAGE_LINE = re.compile(r"(?m)^(\s*image: )\S+")


def service(index: int) -> str:
    return f"svc-{index:02d}"


def fleet_file(index: int) -> str:
    return f"services-{index // PER_FILE:02d}.yaml"


def fleet_files(namespace: str, image_host: str, count: int) -> dict[str, str]:
    """`count` Deployments, PER_FILE to a file, each running an image of its own."""
    files: dict[str, list[str]] = {}
    for i in range(count):
        text = PLAIN.format(
            name=service(i),
            count=count,
            namespace=namespace,
            image=f"{image_host}/bench/{service(i)}:1.0",
        )
        files.setdefault(fleet_file(i), []).append(text)
    out = {name: "---\n".join(texts) for name, texts in files.items()}
    out["notes.txt"] = "outside commits:\n"
    return out


# --- git -------------------------------------------------------------------------------------


def remote_head(remote: GitRemote) -> str:
    """The branch head of the bare remote, read from the ref file (no git process per poll)."""
    try:
        return (remote.bare / "refs" / "heads" / remote.branch).read_text().strip()
    except FileNotFoundError:
        return run_git("rev-parse", f"refs/heads/{remote.branch}", cwd=remote.bare)


def refresh(remote: GitRemote) -> None:
    """Bring the remote's working clone to the branch head (the operator pushed since)."""
    run_git("fetch", "--quiet", "origin", cwd=remote.work)
    run_git("reset", "--quiet", "--hard", f"origin/{remote.branch}", cwd=remote.work)


def commit_count(remote: GitRemote) -> int:
    return int(run_git("rev-list", "--count", f"refs/heads/{remote.branch}", cwd=remote.bare))


class OutsidePusher(threading.Thread):
    """Commits to notes.txt from the remote's own clone, as a person would, while jobs run."""

    def __init__(self, remote: GitRemote, pushes: int, label: str) -> None:
        super().__init__(name=f"outside-{label}", daemon=True)
        self.remote = remote
        self.pushes = pushes
        self.label = label
        self.pushed = 0
        self.retries = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for i in range(self.pushes):
                time.sleep(OUTSIDE_GAP)
                self._push(i)
        except BaseException as exc:  # reported by the caller
            self.error = exc

    def _push(self, i: int) -> None:
        work = self.remote.work
        notes = work / "notes.txt"
        for _attempt in range(30):
            run_git("pull", "--quiet", "--rebase", "origin", self.remote.branch, cwd=work)
            notes.write_text(notes.read_text() + f"outside {self.label} {i}\n")
            run_git("commit", "--quiet", "-am", f"outside {self.label} {i}", cwd=work)
            try:
                run_git("push", "--quiet", "origin", f"HEAD:{self.remote.branch}", cwd=work)
                self.pushed += 1
                return
            except RuntimeError:
                self.retries += 1
                run_git("reset", "--quiet", "--hard", f"origin/{self.remote.branch}", cwd=work)
        raise RuntimeError(f"outside push {i} never landed")


# --- processes -------------------------------------------------------------------------------


class Pools:
    """The real sync, scan and automation pools, each a subprocess in its own process group."""

    def __init__(self, config: Path, workdir: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.processes = [
            ManagedProcess(f"{pool}-worker", self._argv(pool, config), workdir, env=env)
            for pool in ("sync", "scan", "automation")
        ]

    @staticmethod
    def _argv(pool: str, config: Path) -> list[str]:
        return [
            sys.executable, "-m", f"workers.{pool}",
            "--config", str(config),
            "--hostname", f"bench-{pool}@%h",
        ]  # fmt: skip

    def start(self) -> Pools:
        for process in self.processes:
            process.start()
        return self

    def check_alive(self) -> None:
        for process in self.processes:
            if not process.running():
                raise RuntimeError(
                    f"{process.name} exited; log {process.log_path}:\n{process.log_tail()}"
                )

    def wait_ready(self, sender: Celery) -> None:
        """Until every pool answers a ping (a pool that answers has its processes running)."""
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            self.check_alive()
            replies = sender.control.ping(timeout=1.0) or []
            if len(replies) >= len(self.processes):
                return
        raise RuntimeError(f"worker pools not ready after {READY_SECONDS:.0f} s")

    def stop(self) -> None:
        for process in self.processes:
            process.stop(timeout=15)


def start_web(config: Path, workdir: Path, port: int) -> ManagedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "gitops_pipeline.api", "--config", str(config)]
    web = ManagedProcess("web", argv, workdir, env=env).start()
    web.wait_for_port("127.0.0.1", port, timeout=READY_SECONDS)
    return web


def write_config(
    path: Path,
    redis_url: str,
    work_dir: Path,
    kube: KubeServer,
    registry: RegistryServer,
    remotes: dict[str, GitRemote],
    namespaces: dict[str, str],
    automation_concurrency: int,
    web_port: int,
    hook_secret: str,
) -> Settings:
    def pipeline(name: str) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "name": name,
            "git": {"url": remotes[name].url, "user": BOT[0], "email": BOT[1]},
            "cluster": {
                "kubeconfig": str(kube.kubeconfig),
                "default_namespace": namespaces[name],
            },
        }
        if name != AUTO_PIPELINE:  # their images are not in the registry: never scan them
            spec["registry"] = {"scanning": False}
        return spec

    config = {
        "redis_url": redis_url,
        "key_prefix": KEY_PREFIX,
        "work_dir": str(work_dir),
        "log_level": "INFO",
        "api": {"listen": f"127.0.0.1:{web_port}"},
        "registry": {"insecure_hosts": [registry.host]},
        "webhooks": {"distribution": hook_secret},
        "workers": {
            "sync_concurrency": SYNC_CONCURRENCY,
            "scan_concurrency": SCAN_CONCURRENCY,
            "automation_concurrency": automation_concurrency,
        },
        "pipelines": [pipeline(name) for name in remotes],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)  # it holds the webhook secret
    return parse_settings(path.read_text(), str(path), {})


# --- the operator, seen from outside ----------------------------------------------------------


class Operator:
    """Sends tasks from a Celery app of its own and reads what the workers write."""

    def __init__(self, settings: Settings, pools: Pools, apps: k8s.AppsV1Api) -> None:
        self.sender = Celery("bench-sender", set_as_current=False)
        self.sender.conf.update(celery_config(settings))
        self.redis = redis.Redis.from_url(settings.redis_url, decode_responses=True)
        self.binary = redis.Redis.from_url(settings.redis_url)
        self.cache = TagCache(self.binary, settings.key_prefix)
        self.keys = Keys(settings.key_prefix)
        self.pools = pools
        self.apps = apps

    def close(self) -> None:
        self.sender.close()
        self.redis.close()
        self.binary.close()

    def send(self, name: str, *args: Any) -> None:
        self.sender.send_task(name, args=list(args), ignore_result=True)

    def call(self, name: str, *args: Any) -> Any:
        """Send a task and wait for its result."""
        result = self.sender.send_task(name, args=list(args))
        try:
            return result.get(timeout=WAIT_SECONDS)
        finally:
            result.forget()

    def wait(self, what: str, probe: Callable[[], T | None]) -> T:
        """Poll `probe` until it returns something; watch the worker pools."""
        return poll(
            what, probe, alive=self.pools.check_alive, every=POLL_SECONDS, limit=WAIT_SECONDS
        )

    def image(self, namespace: str, name: str) -> str:
        found = self.apps.read_namespaced_deployment(name, namespace, _request_timeout=10)
        return str(cast(Any, found).spec.template.spec.containers[0].image)

    def settle(self, pipeline: str, remote: GitRemote) -> None:
        """Until the pipeline's last sync applied the branch head and no sync runs or waits."""

        def settled() -> bool | None:
            status = cast(dict[str, str], self.redis.hgetall(self.keys.sync(pipeline)))
            if status.get("status") in ("failed", "synced-with-errors"):
                raise RuntimeError(
                    f"{pipeline}: sync {status.get('status')}: {status.get('error')!r} "
                    f"{status.get('errors', '')[:1000]}"
                )
            if status.get("status") != "synced" or status.get("revision") != remote_head(remote):
                return None
            running = self.keys.sync_run(pipeline), self.keys.sync_pending(pipeline)
            return None if self.redis.exists(*running) else True

        self.wait(f"{pipeline} to sync its head", settled)
        time.sleep(SETTLE_SECONDS)

    def first_sync(self, pipeline: str, remote: GitRemote) -> None:
        self.send("sync.trigger", pipeline)
        self.settle(pipeline, remote)

    def scan(self, image: str, pipelines: list[str]) -> None:
        """Scan the repository and wait for it (pipelines=[]: start no automation)."""
        outcome = self.call("scan.repository", image, [TAG_FILTER], pipelines)
        if "error" in outcome or "skipped" in outcome:
            raise RuntimeError(f"scan of {image}: {outcome}")


# --- 1. automation latency -------------------------------------------------------------------


class DeploymentWatch(threading.Thread):
    """When each image first appeared in a Deployment in the API server, from a watch.

    Event times are taken as the events arrive, so the clock needs no polling of the API
    server (which would load it, on the same two cores, while it is measured)."""

    def __init__(self, apps: k8s.AppsV1Api, namespace: str, name: str) -> None:
        super().__init__(name=f"watch-{namespace}-{name}", daemon=True)
        self.apps = apps
        self.namespace = namespace
        self.deployment = name
        self.error: BaseException | None = None
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def run(self) -> None:
        version: str | None = None
        while not self._stopping.is_set():
            options: dict[str, Any] = {
                "field_selector": f"metadata.name={self.deployment}",
                "timeout_seconds": WATCH_SECONDS,
                "_request_timeout": WATCH_SECONDS * 4,
                "deserialize": False,
            }
            if version is not None:
                options["resource_version"] = version
            try:
                watcher = k8s_watch.Watch()  # type: ignore[no-untyped-call]
                stream = watcher.stream(  # type: ignore[no-untyped-call]
                    self.apps.list_namespaced_deployment, self.namespace, **options
                )
                for event in stream:
                    now = time.monotonic()
                    obj = event["object"]
                    version = obj["metadata"]["resourceVersion"]
                    with self._lock:
                        for container in obj["spec"]["template"]["spec"]["containers"]:
                            self._seen.setdefault(container["image"], now)
                    if self._stopping.is_set():
                        return
            except ApiException as exc:
                if exc.status != 410:  # 410: the version expired; list and watch again
                    self.error = exc
                    return
                version = None
            except BaseException as exc:  # reported by the main thread
                self.error = exc
                return

    def seen(self, image: str) -> float | None:
        """Monotonic time the Deployment was first seen running `image`, None if not yet."""
        if self.error is not None:
            raise RuntimeError(f"the watch of {self.deployment} failed: {self.error}")
        with self._lock:
            return self._seen.get(image)

    def stop(self) -> None:
        self._stopping.set()
        self.join(WATCH_SECONDS * 2)


@dataclass
class Change:
    """One measured change: seconds from the trigger to the commit and to the running image."""

    running: float
    commit: float | None = None


class AutomationBench:
    """The automated Deployment, its registry repository and its remote."""

    def __init__(
        self,
        op: Operator,
        registry: RegistryServer,
        remote: GitRemote,
        web_url: str,
        hook_secret: str,
        watch: DeploymentWatch,
    ) -> None:
        self.op = op
        self.watch = watch
        self.registry = registry
        self.remote = remote
        self.image = f"{registry.host}/{APP_REPOSITORY}"
        self.hook = httpx.Client(base_url=web_url, timeout=30.0)
        self.hook_secret = hook_secret
        self.tags = 0

    def close(self) -> None:
        self.hook.close()

    def push_tag(self) -> tuple[str, str]:
        """Push the next tag, created an hour after the previous one; return (tag, digest)."""
        self.tags += 1
        tag = f"v{self.tags}"
        created = CREATED_BASE + timedelta(hours=self.tags)
        digest = push_image(self.registry.url, APP_REPOSITORY, tag, created)
        return tag, digest

    def set_up(self) -> None:
        tag, _ = self.push_tag()
        text = AUTOMATED.format(
            name=APP, namespace=AUTO_NAMESPACE, filter=TAG_FILTER, image=f"{self.image}:{tag}"
        )
        self.remote.commit({APP_FILE: text}, "app, automated")
        self.op.first_sync(AUTO_PIPELINE, self.remote)
        if self.op.image(AUTO_NAMESPACE, APP) != f"{self.image}:{tag}":
            raise RuntimeError("the first sync did not apply the Deployment")
        self.op.scan(self.image, [])  # the tag cache knows v1: the next tag is a new one

    def _notification(self, tag: str, digest: str) -> bytes:
        """A distribution notification envelope for a manifest push, as registry:2 sends it."""
        stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        event = {
            "id": str(uuid.uuid4()),
            "timestamp": stamp,
            "action": "push",
            "target": {
                "mediaType": MANIFEST_V2,
                "digest": digest,
                "repository": APP_REPOSITORY,
                "url": f"{self.registry.url}/v2/{APP_REPOSITORY}/manifests/{digest}",
                "tag": tag,
            },
            "request": {
                "id": str(uuid.uuid4()),
                "addr": "127.0.0.1:40000",
                "host": self.registry.host,
                "method": "PUT",
                "useragent": "automation-bench",
            },
            "actor": {},
            "source": {"addr": "bench-registry:5000", "instanceID": str(uuid.uuid4())},
        }
        return json.dumps({"events": [event]}).encode()

    def _post_hook(self, tag: str, digest: str) -> None:
        response = self.hook.post(
            "/hooks/distribution",
            content=self._notification(tag, digest),
            headers={
                "Authorization": f"Bearer {self.hook_secret}",
                "Content-Type": "application/vnd.docker.distribution.events.v2+json",
            },
        )
        body = response.json()
        if response.status_code != 202 or body.get("status") != "accepted":
            raise RuntimeError(f"the webhook answered {response.status_code} {body}")

    def automated(self, via: str) -> Change:
        """A new tag, then `scan.repository` sent (via="scan") or the webhook POSTed ("hook");
        the clock runs from that to the commit in the remote and the image in the API server."""
        self.op.settle(AUTO_PIPELINE, self.remote)
        before = remote_head(self.remote)
        tag, digest = self.push_tag()
        target = f"{self.image}:{tag}"
        started = time.monotonic()
        if via == "scan":
            self.op.send("scan.repository", self.image, [TAG_FILTER], [AUTO_PIPELINE])
        else:
            self._post_hook(tag, digest)
        commit: float | None = None
        running: float | None = None

        def probe() -> bool | None:
            nonlocal commit, running
            now = time.monotonic()
            if commit is None and remote_head(self.remote) != before:
                commit = now - started
            if running is None and (seen := self.watch.seen(target)) is not None:
                running = seen - started
            return True if commit is not None and running is not None else None

        self.op.wait(f"{target} to be committed and applied", probe)
        assert running is not None
        self._check_running(target)
        subject = run_git(
            "log", "-1", "--format=%an|%s", remote_head(self.remote), cwd=self.remote.bare
        )
        if subject != f"{BOT[0]}|Auto-release {target}":
            raise RuntimeError(f"unexpected head commit {subject!r} for {target}")
        return Change(running=running, commit=commit)

    def by_hand(self) -> Change:
        """The baseline: the same kind of change committed to git by hand, then sync.trigger.

        The tag is pushed and scanned first (without automation, off the clock), so the sync's
        trailing automation.plan finds the running tag the newest and leaves it alone."""
        self.op.settle(AUTO_PIPELINE, self.remote)
        tag, _ = self.push_tag()
        target = f"{self.image}:{tag}"
        self.op.scan(self.image, [])
        refresh(self.remote)
        text = IMAGE_LINE.sub(rf"\g<1>{target}", (self.remote.work / APP_FILE).read_text())
        self.remote.commit({APP_FILE: text}, f"Release {target} by hand")
        started = time.monotonic()
        self.op.send("sync.trigger", AUTO_PIPELINE)

        seen = self.op.wait(f"{target} to be applied", lambda: self.watch.seen(target))
        self._check_running(target)
        return Change(running=seen - started)

    def _check_running(self, target: str) -> None:
        """The watch's word, confirmed once by a read."""
        running = self.op.image(AUTO_NAMESPACE, APP)
        if running != target:
            raise RuntimeError(f"the watch saw {target}, the API server serves {running}")


@dataclass
class LatencyResults:
    scan: list[Change] = field(default_factory=list)
    hook: list[Change] = field(default_factory=list)
    baseline: list[Change] = field(default_factory=list)


def measure_latency(bench: AutomationBench, rounds: int) -> LatencyResults:
    log("warm-up round (not measured): scan.repository, webhook, by hand")
    bench.automated("scan")
    bench.automated("hook")
    bench.by_hand()
    results = LatencyResults()
    for n in range(rounds):
        results.scan.append(bench.automated("scan"))
        results.hook.append(bench.automated("hook"))
        results.baseline.append(bench.by_hand())
        scan, hook, base = results.scan[-1], results.hook[-1], results.baseline[-1]
        log(
            f"round {n}: scan.repository {scan.running:.3f} s (commit {scan.commit:.3f}), "
            f"webhook {hook.running:.3f} s (commit {hook.commit:.3f}), "
            f"by hand {base.running:.3f} s"
        )
    return results


# --- 2. releases on one branch ---------------------------------------------------------------


@dataclass
class Fleet:
    pipeline: str
    namespace: str
    remote: GitRemote
    count: int
    image_host: str

    def workload(self, index: int) -> str:
        return f"{self.namespace}:deployment/{service(index)}"

    def image(self, index: int, tag: str) -> str:
        return f"{self.image_host}/bench/{service(index)}:{tag}"


@dataclass
class ReleaseRun:
    label: str
    releases: int
    seconds: float
    applied_seconds: float
    outside: int
    outside_retries: int
    commits_before: int
    commits_after: int
    failures: list[str]

    @property
    def per_release(self) -> float:
        return self.seconds / self.releases


class Releases:
    def __init__(self, op: Operator) -> None:
        self.op = op
        self.prefix = op.keys.prefix

    def set_up(self, fleet: Fleet, core: k8s.CoreV1Api) -> None:
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=fleet.namespace)))
        files = fleet_files(fleet.namespace, fleet.image_host, fleet.count)
        fleet.remote.commit(files, f"{fleet.count} services")
        self.op.first_sync(fleet.pipeline, fleet.remote)

    def enqueue(self, fleet: Fleet, index: int, tag: str) -> str:
        """What `POST /api/v1/pipelines/<p>/release` does for `gitopsctl release -w W -i I`."""
        request = {
            "workloads": [fleet.workload(index)],
            "all": False,
            "image": fleet.image(index, tag),
            "exclude": [],
            "force": False,
            "dry_run": False,
        }
        job_id = jobs.create(self.op.redis, self.prefix, fleet.pipeline, "release", request)
        self.op.send("automation.release", job_id, fleet.pipeline)
        return job_id

    def _fields(self, job_ids: list[str], name: str) -> list[str | None]:
        pipe = self.op.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(jobs.job_key(self.prefix, job_id), name)
        return cast(list[str | None], pipe.execute())

    def wait_finished(self, job_ids: list[str]) -> None:
        def finished() -> bool | None:
            states = self._fields(job_ids, "status")
            return True if all(s in ("succeeded", "failed") for s in states) else None

        self.op.wait(f"{len(job_ids)} release job(s)", finished)

    def warm_up(self, fleet: Fleet) -> None:
        """One release first (not measured): the automation pool's working copy is cloned."""
        self.wait_finished([self.enqueue(fleet, 0, "warm")])
        self.op.settle(fleet.pipeline, fleet.remote)

    def run(self, fleet: Fleet, label: str, concurrent: bool, outside: int) -> ReleaseRun:
        self.op.settle(fleet.pipeline, fleet.remote)
        before = commit_count(fleet.remote)
        refresh(fleet.remote)
        pusher = OutsidePusher(fleet.remote, outside, label)
        started = time.monotonic()
        pusher.start()
        job_ids: list[str] = []
        for index in range(fleet.count):
            job_ids.append(self.enqueue(fleet, index, "r1"))
            if not concurrent:
                self.wait_finished(job_ids[-1:])
        self.wait_finished(job_ids)
        seconds = time.monotonic() - started
        pusher.join(WAIT_SECONDS)

        def applied() -> bool | None:
            synced = self._fields(job_ids, "sync")
            return True if all(s == "applied" for s in synced) else None

        self.op.wait("every release to be applied by a sync", applied)
        applied_seconds = time.monotonic() - started
        self.op.settle(fleet.pipeline, fleet.remote)
        failures = self.check(fleet, job_ids, pusher, before)
        return ReleaseRun(
            label=label,
            releases=fleet.count,
            seconds=seconds,
            applied_seconds=applied_seconds,
            outside=pusher.pushed,
            outside_retries=pusher.retries,
            commits_before=before,
            commits_after=commit_count(fleet.remote),
            failures=failures,
        )

    def check(
        self, fleet: Fleet, job_ids: list[str], pusher: OutsidePusher, before: int
    ) -> list[str]:
        """What is wrong with the branch after the run (empty: nothing)."""
        failures: list[str] = []
        found = [jobs.get(self.op.redis, self.prefix, job_id) or {} for job_id in job_ids]
        failed = [
            f"{j.get('id')}: {j.get('error')}" for j in found if j.get("status") != "succeeded"
        ]
        if failed:
            failures.append(f"{len(failed)} job(s) not succeeded: {failed[:3]}")
        if pusher.error is not None or pusher.is_alive():
            failures.append(f"outside pushes: {pusher.error or 'still running'}")
        bare, branch = fleet.remote.bare, f"refs/heads/{fleet.remote.branch}"
        shas = set(run_git("rev-list", branch, cwd=bare).splitlines())
        missing = [j.get("id") for j in found if j.get("sha") not in shas]
        if missing:
            failures.append(f"{len(missing)} job commit(s) not on the branch")
        if run_git("rev-list", "--merges", branch, cwd=bare):
            failures.append("merge commits on the branch")
        expected = before + fleet.count + pusher.pushed
        if len(shas) != expected:
            failures.append(f"{len(shas)} commits, expected {expected}")
        files: dict[str, str] = {}
        for index in range(fleet.count):
            name = fleet_file(index)
            if name not in files:
                files[name] = run_git("show", f"{branch}:{name}", cwd=bare)
            if f"image: {fleet.image(index, 'r1')}   # the running tag" not in files[name]:
                failures.append(f"{name}: {service(index)} does not run {fleet.image(index, 'r1')}")
        notes = run_git("show", f"{branch}:notes.txt", cwd=bare)
        if notes.count(f"outside {pusher.label} ") != pusher.pushed:
            failures.append("notes.txt lacks outside commits")
        return failures


# --- the report ------------------------------------------------------------------------------


def seconds(value: float) -> str:
    return f"{value:7.3f} s"


def row(label: str, values: Sequence[float]) -> str:
    return (
        f"  {label:<52} {len(values):>3}  {seconds(statistics.median(values))}  "
        f"{seconds(min(values))}  {seconds(max(values))}"
    )


def report(
    facts: dict[str, str],
    latency: LatencyResults | None,
    releases: list[ReleaseRun],
    total: float,
) -> None:
    print("gitops-pipeline automation benchmark")
    for key, value in facts.items():
        print(f"  {key:<16} {value}")
    print()
    header = f"  {'measurement':<52} {'n':>3}  {'median':>9}  {'min':>9}  {'max':>9}"
    print(header)
    print("  " + "-" * (len(header) - 2))
    verdicts: list[str] = []
    if latency is not None:
        print(f"1. new tag in the registry -> automated Deployment runs it (filter {TAG_FILTER})")
        print(row("scan.repository sent -> commit in the git remote", _commits(latency.scan)))
        print(row("scan.repository sent -> Deployment runs the tag", _running(latency.scan)))
        print(row("webhook POSTed -> commit in the git remote", _commits(latency.hook)))
        print(row("webhook POSTed -> Deployment runs the tag", _running(latency.hook)))
        print(
            row("baseline: git push + sync.trigger -> Deployment runs", _running(latency.baseline))
        )
        base = statistics.median(_running(latency.baseline))
        for label, runs in (("scan.repository", latency.scan), ("registry webhook", latency.hook)):
            values = _running(runs)
            mid, top = statistics.median(values), max(values)
            verdicts.append(
                f"automation latency via {label}: median {mid:.3f} s, max {top:.3f} s "
                f"(target: every round < {LATENCY_TARGET:.0f} s) {verdict(top < LATENCY_TARGET)}"
            )
            verdicts.append(
                f"  automation / baseline (git push + sync.trigger) = {mid / base:.2f} "
                f"(scan + plan + commit add {mid - base:.3f} s to the {base:.3f} s sync path)"
            )
        verdicts.append(
            f"  context: Flux v1 scans registries and runs automation every "
            f"{FLUX_V1_INTERVAL / 60:.0f} min by default (--registry-poll-interval, "
            f"--automation-interval): a new tag waits up to {FLUX_V1_INTERVAL:.0f} s, "
            f"{FLUX_V1_INTERVAL / 2:.0f} s on average, before its commit"
        )
    if releases:
        first = releases[0]
        print(
            f"2. {first.releases} release jobs on one branch ({first.releases} Deployments in "
            f"{-(-first.releases // PER_FILE)} files, one --update-image each), outside pushes"
        )
        print(
            f"  {'run':<28} {'jobs done':>10} {'per release':>12} {'all applied':>12} "
            f"{'outside':>8} {'commits':>8}  checks"
        )
        for run in releases:
            gained = run.commits_after - run.commits_before
            checks = "ok" if not run.failures else "; ".join(run.failures)
            print(
                f"  {run.label:<28} {seconds(run.seconds):>10} {seconds(run.per_release):>12} "
                f"{seconds(run.applied_seconds):>12} {run.outside:>8} {gained:>+8}  {checks}"
            )
        by_label = {run.label.split(" ")[0]: run for run in releases}
        if "concurrent" in by_label and "sequential" in by_label:
            conc, seq = by_label["concurrent"], by_label["sequential"]
            verdicts.append(
                f"releases: concurrent / sequential = {conc.seconds / seq.seconds:.2f} "
                f"({conc.seconds:.2f} s vs {seq.seconds:.2f} s for {conc.releases}; "
                f"{conc.per_release:.3f} s vs {seq.per_release:.3f} s per release)"
            )
            verdicts.append(
                "  context: writes to one branch take its lock one at a time, so about 1.00 is "
                "the best to expect; the figure is what queueing them all at once costs"
            )
        for run in releases:
            ok = not run.failures
            detail = (
                f"{run.releases}/{run.releases} succeeded, every image in place, no merge "
                f"commits, +{run.commits_after - run.commits_before} commits = {run.releases} "
                f"releases + {run.outside} outside pushes ({run.outside_retries} outside "
                "retries)"
                if ok
                else "; ".join(run.failures)
            )
            verdicts.append(f"release checks, {run.label}: {detail} {verdict(ok)}")
    print()
    for line in verdicts:
        print(line)
    print(f"total bench time: {total:.0f} s")


def _running(runs: Sequence[Change]) -> list[float]:
    return [r.running for r in runs]


def _commits(runs: Sequence[Change]) -> list[float]:
    return [r.commit for r in runs if r.commit is not None]


# --- the run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    rounds: int
    releases: int
    outside: int
    automation_concurrency: int
    parts: frozenset[str]
    keep: bool


def run(options: Options) -> None:
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="gp-auto-bench-"))
    log(f"state in {tmp}")
    with ExitStack() as stack:
        if options.keep:
            stack.callback(log, f"kept {tmp}")
        else:
            stack.callback(shutil.rmtree, tmp, True)
        log("starting Redis, etcd + kube-apiserver, docker-registry")
        redis_server = start_redis(tmp / "redis")
        stack.callback(redis_server.stop)
        kube = start_kube(tmp / "kube", tenants=())
        stack.callback(kube.stop)
        registry = start_registry(tmp / "registry")
        stack.callback(registry.stop)
        api = k8s_config.new_client_from_config(config_file=str(kube.kubeconfig))  # type: ignore[no-untyped-call]
        stack.callback(api.close)
        core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)

        remotes = {
            name: GitRemote(tmp / "git" / name)
            for name in (AUTO_PIPELINE, SEQ_PIPELINE, CONC_PIPELINE)
        }
        namespaces = {
            AUTO_PIPELINE: AUTO_NAMESPACE,
            SEQ_PIPELINE: "bench-rel-seq",
            CONC_PIPELINE: "bench-rel-conc",
        }
        web_port = free_port("127.0.0.1")
        hook_secret = secrets.token_hex(32)
        config = tmp / "gitops.yaml"
        settings = write_config(
            config, redis_server.url, tmp / "work", kube, registry, remotes, namespaces,
            options.automation_concurrency, web_port, hook_secret,
        )  # fmt: skip
        log("starting the sync, scan and automation pools and the web process")
        pools = Pools(config, tmp / "workers").start()
        stack.callback(pools.stop)
        web = start_web(config, tmp / "web", web_port)
        stack.callback(web.stop)
        op = Operator(settings, pools, apps)
        stack.callback(op.close)
        pools.wait_ready(op.sender)

        facts = {
            "nproc": str(os.cpu_count()),
            "kube-apiserver": str(k8s.VersionApi(api).get_code().git_version),
            "python": platform.python_version(),
            "pools": (
                f"python -m workers.{{sync,scan,automation}} (prefork; concurrency "
                f"{SYNC_CONCURRENCY}/{SCAN_CONCURRENCY}/{options.automation_concurrency})"
            ),
            "web": "python -m gitops_pipeline.api (uvicorn), POST /hooks/distribution",
            "repetitions": (
                f"{options.rounds} rounds per path after one warm-up round; "
                f"{options.releases} releases per run after one warm-up release"
            ),
        }

        latency: LatencyResults | None = None
        if "latency" in options.parts:
            log("part 1: automation latency")
            core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=AUTO_NAMESPACE)))
            watch = DeploymentWatch(apps, AUTO_NAMESPACE, APP)
            watch.start()
            stack.callback(watch.stop)
            bench = AutomationBench(
                op, registry, remotes[AUTO_PIPELINE], f"http://127.0.0.1:{web_port}", hook_secret,
                watch,
            )  # fmt: skip
            stack.callback(bench.close)
            bench.set_up()
            latency = measure_latency(bench, options.rounds)

        release_runs: list[ReleaseRun] = []
        if "releases" in options.parts:
            log(f"part 2: {options.releases} releases, sequential then concurrent")
            releases = Releases(op)
            fleets = {
                name: Fleet(name, namespaces[name], remotes[name], options.releases, registry.host)
                for name in (SEQ_PIPELINE, CONC_PIPELINE)
            }
            for fleet in fleets.values():
                releases.set_up(fleet, core)
                releases.warm_up(fleet)
            for label, name, concurrent in (
                ("sequential (baseline)", SEQ_PIPELINE, False),
                ("concurrent", CONC_PIPELINE, True),
            ):
                result = releases.run(fleets[name], label, concurrent, options.outside)
                release_runs.append(result)
                log(
                    f"{label}: {result.seconds:.2f} s ({result.per_release:.3f} s per release), "
                    f"all applied at {result.applied_seconds:.2f} s"
                )
        report(facts, latency, release_runs, time.monotonic() - started)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.automation_bench",
        description="automation latency and concurrent releases benchmark",
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds and releases")
    parser.add_argument("--rounds", type=int, help="rounds per latency path (default 7)")
    parser.add_argument("--releases", type=int, help="release jobs per run (default 50)")
    parser.add_argument("--outside", type=int, default=5, help="outside pushes per release run")
    parser.add_argument(
        "--automation-concurrency",
        type=int,
        default=4,
        help="workers.automation_concurrency (prefork processes of the automation pool)",
    )
    parser.add_argument("--only", choices=("latency", "releases"), help="run one part")
    parser.add_argument("--keep", action="store_true", help="keep the temporary state directory")
    args = parser.parse_args(argv)
    options = Options(
        rounds=args.rounds or (3 if args.quick else 7),
        releases=args.releases or (20 if args.quick else 50),
        outside=args.outside,
        automation_concurrency=args.automation_concurrency,
        parts=frozenset([args.only] if args.only else ["latency", "releases"]),
        keep=args.keep,
    )
    return run_interruptibly(lambda: run(options))


if __name__ == "__main__":
    raise SystemExit(main())
