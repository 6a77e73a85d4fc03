"""kill -9 during apply, with real worker processes: the sync is redelivered and completes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml
from celery import Celery
from kubernetes import client as k8s

from gitops_pipeline.celery_app import celery_config
from gitops_pipeline.config import parse_settings
from gitops_pipeline.store import Keys
from gitops_pipeline.testbed.gitremote import GitRemote
from gitops_pipeline.testbed.kube import KubeServer
from gitops_pipeline.testbed.redis_server import RedisServer

REPO = Path(__file__).parents[2]
CONFIGMAPS = 1500  # enough that an apply takes seconds, so the kill lands inside it
WAIT = 120.0  # upper bound for a wait, not a speed check


class Crash:
    def __init__(
        self, tmp_path: Path, redis_url: str, prefix: str, kube: KubeServer, namespace: str
    ) -> None:
        self.tmp = tmp_path
        self.namespace = namespace
        self.name = f"crash-{prefix.strip(':')}"
        remote = GitRemote(tmp_path / "git")
        docs = [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"cm-{i:04d}"},
                "data": {"index": str(i)},
            }
            for i in range(CONFIGMAPS)
        ]
        remote.commit({"configmaps.yaml": yaml.safe_dump_all(docs)}, "many configmaps")
        config = {
            "redis_url": redis_url,
            "key_prefix": prefix,
            "work_dir": str(tmp_path / "work"),
            "tasks": {
                "soft_time_limit": "20s",
                "hard_time_limit": "25s",
                "visibility_timeout": "30s",
                "lock_ttl": "3s",
            },
            "workers": {"sync_concurrency": 1},
            "pipelines": [
                {
                    "name": self.name,
                    "git": {"url": remote.url},
                    "cluster": {"kubeconfig": str(kube.kubeconfig), "default_namespace": namespace},
                }
            ],
        }
        self.config = tmp_path / "gitops.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.settings = parse_settings(self.config.read_text(), str(self.config), {})
        self.redis = redis.Redis.from_url(redis_url, decode_responses=True)
        self.workers: list[subprocess.Popen[bytes]] = []

    def start_worker(self) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"worker-{len(self.workers)}.log").open("w")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "workers.sync",
                "--config",
                str(self.config),
                "--hostname",
                f"crash{len(self.workers)}@%h",
            ],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append(proc)
        return proc

    def trigger(self) -> None:
        sender = Celery("crash-test-sender", set_as_current=False)
        sender.conf.update(celery_config(self.settings))
        sender.send_task("sync.trigger", args=[self.name], kwargs={"full": True})
        sender.close()

    def status(self) -> dict[str, str]:
        return self.redis.hgetall(Keys(self.settings.key_prefix).sync(self.name))

    def wait_until_applying(self, core: k8s.CoreV1Api) -> int:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            count = len(core.list_namespaced_config_map(self.namespace).items)
            if count > 0:
                return count
            time.sleep(0.05)
        raise AssertionError("the apply never started")

    def wait_synced(self) -> dict[str, str]:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            status = self.status()
            if status.get("status") in {"synced", "synced-with-errors", "failed"}:
                return status
            time.sleep(0.2)
        logs = "\n".join(p.read_text()[-3000:] for p in self.tmp.glob("worker-*.log"))
        raise AssertionError(f"no sync result: {self.status()}\n{logs}")

    def stop(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


@pytest.fixture
def crash(
    redis_server: RedisServer,
    key_prefix: str,
    kube: KubeServer,
    kube_namespace: str,
    tmp_path: Path,
) -> Iterator[Crash]:
    scenario = Crash(tmp_path, redis_server.url, key_prefix, kube, kube_namespace)
    try:
        yield scenario
    finally:
        scenario.stop()


def _pool_children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(line) for line in out.stdout.split()]


def test_killed_pool_process_is_redelivered(crash: Crash, kube_api_client: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(kube_api_client)
    worker = crash.start_worker()
    crash.trigger()
    seen = crash.wait_until_applying(core)
    for child in _pool_children(worker.pid):
        os.kill(child, signal.SIGKILL)
    status = crash.wait_synced()
    assert status["status"] == "synced", status
    assert len(core.list_namespaced_config_map(crash.namespace).items) == CONFIGMAPS
    assert 0 < seen < CONFIGMAPS  # the kill landed in the middle of the apply


def test_killed_worker_is_redelivered_to_another(
    crash: Crash, kube_api_client: k8s.ApiClient
) -> None:
    core = k8s.CoreV1Api(kube_api_client)
    first = crash.start_worker()
    crash.trigger()
    seen = crash.wait_until_applying(core)
    os.killpg(first.pid, signal.SIGKILL)  # the whole worker: main process and pool
    first.wait(timeout=30)
    crash.start_worker()
    status = crash.wait_synced()
    assert status["status"] == "synced", status
    assert len(core.list_namespaced_config_map(crash.namespace).items) == CONFIGMAPS
    assert 0 < seen < CONFIGMAPS
