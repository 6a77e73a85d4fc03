"""`make run`'s program: the example comes up on embedded services and goes away completely."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import yaml

from gitops_pipeline.devstack import Stack
from gitops_pipeline.testbed.gitremote import run_git
from gitops_pipeline.testbed.process import free_port
from gitops_pipeline.testbed.redis_server import RedisServer

REPO = Path(__file__).parents[2]
WAIT = 120.0  # upper bound for start-up and the first sync, not a speed check


def _group_alive(pgid: int) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "pgid=,pid=,args="], capture_output=True, text=True)
    return [line for line in ps.stdout.splitlines() if line.split()[0] == str(pgid)]


def test_run_brings_up_the_example_and_stops_cleanly(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    api_port, flower_port = free_port(), free_port()
    env = {
        **os.environ,
        "GITOPS__REDIS_URL": redis_server.url,
        "GITOPS__KEY_PREFIX": "devstack:",
        "GITOPS__WORK_DIR": str(tmp_path / "work"),
        "GITOPS__API__LISTEN": f"127.0.0.1:{api_port}",
        "GITOPS__FLOWER__LISTEN": f"127.0.0.1:{flower_port}",
    }
    env.pop("GITOPS_CONFIG", None)
    state = tmp_path / "state"
    log = (tmp_path / "run.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gitops_pipeline.devstack", "--state-dir", str(state)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + WAIT
        while not (state / "gitops.yaml").exists():
            assert proc.poll() is None, (tmp_path / "run.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.5)
        token = yaml.safe_load((state / "gitops.yaml").read_text())["api"]["tokens"][0]["token"]
        api = httpx.Client(
            base_url=f"http://127.0.0.1:{api_port}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )
        status: dict[str, str] = {}
        triggered = False
        while status.get("status") != "synced":
            assert proc.poll() is None, (tmp_path / "run.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "run.log").read_text()
            time.sleep(1)
            try:
                if not triggered:
                    triggered = api.post("/api/v1/pipelines/sample-app/sync").status_code == 202
                status = api.get("/api/v1/pipelines/sample-app").json()
            except httpx.HTTPError:
                continue

        def running() -> str:
            kubectl = subprocess.run(
                [
                    "kubectl",
                    "--kubeconfig",
                    str(state / "kube" / "kubeconfig.yaml"),
                    "get",
                    "deploy",
                    "sample-app",
                    "-o",
                    "jsonpath={.spec.template.spec.containers[0].image}",
                ],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert kubectl.returncode == 0, kubectl.stderr
            return kubectl.stdout

        # The example's image lives in the embedded registry, so the seed walkthrough runs here.
        assert re.fullmatch(r"127\.0\.0\.1:\d+/gitopsbook/sample-app:v0\.1", running())
        images = "/api/v1/pipelines/sample-app/images"
        deadline = time.monotonic() + WAIT  # the first scan comes with the beat's scan tick
        while not any(row["tags"] for row in api.get(images).json()):
            assert time.monotonic() < deadline, (tmp_path / "run.log").read_text()
            time.sleep(1)
        workload = {"workloads": ["default:deployment/sample-app"], "automate": True}
        assert api.post("/api/v1/pipelines/sample-app/policy", json=workload).status_code == 202
        while not running().endswith("/gitopsbook/sample-app:v0.2"):
            assert time.monotonic() < deadline, (tmp_path / "run.log").read_text()
            time.sleep(1)
        flower = httpx.get(f"http://127.0.0.1:{flower_port}/", timeout=5)
        assert flower.status_code == 401  # Flower is behind basic auth
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
        log.close()
    deadline = time.monotonic() + 30
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _group_alive(proc.pid) == []
    for pid_file in state.rglob("*.pid"):
        raise AssertionError(f"{pid_file} left behind: a service was not stopped")


def test_a_second_run_serves_a_fresh_example(tmp_path: Path) -> None:
    """`make run` twice on one state directory: the example repository is served again."""
    for _ in range(2):
        with ExitStack() as services:
            stack = Stack(tmp_path / "state", services)
            remote = stack.example_remote()
            deployment = (remote.work / "deployment.yaml").read_text()
            assert f"image: {stack.registry_host()}/gitopsbook/sample-app:v0.1" in deployment
            history = run_git("log", "--format=%s", cwd=remote.bare).splitlines()
            assert history == ["sample-app v0.1"]  # a fresh repository, not the first run's
