"""The seed walkthrough through gitopsctl only, against a running API (uvicorn on loopback), a
real worker, Redis, registry, git remote and the test-bed API server."""

from __future__ import annotations

from pathlib import Path

import httpx
import test_cli as cli_tests
import test_operations as ops
from kubernetes import client as k8s

from gitops_pipeline.config import Settings
from gitops_pipeline.testbed.gitremote import run_git
from gitops_pipeline.testbed.kube import KubeServer
from gitops_pipeline.testbed.registry import RegistryServer

worker = ops.worker  # the operations module's real worker (found by this name)


def test_seed_walkthrough_with_gitopsctl(
    worker: Settings,
    registry: RegistryServer,
    kube: KubeServer,
    kube_namespace: str,
    kube_api_client: k8s.ApiClient,
    key_prefix: str,
    tmp_path: Path,
) -> None:
    name = f"cli-{key_prefix.strip(':')}"
    app = ops.SampleApp(worker, registry, kube, kube_namespace, kube_api_client, tmp_path, name)
    setup, image, running = app.setup, app.image, app.running

    workload = f"{kube_namespace}:deployment/sample-app"
    with cli_tests._serve(setup.settings) as url:

        def gitopsctl(*args: str) -> tuple[int, str]:
            result = cli_tests._invoke(url, *args, token=ops.ADMIN)
            return result.exit_code, result.output

        code, out = gitopsctl("sync", "-p", name, "--timeout", "60")
        assert code == 0 and f"Commit applied: {setup.remote.head()[:7]}" in out, out

        code, out = gitopsctl("list-workloads", "-p", name)
        assert code == 0, out
        header, row = out.splitlines()[:2]
        assert header.split() == ["WORKLOAD", "CONTAINER", "IMAGE", "RELEASE", "POLICY"]
        assert row.split() == [
            f"{kube_namespace}:Deployment/sample-app",
            "sample-app",
            f"{image}:v0.1",
            "applied",
        ]

        for narrowing in (["-n", "elsewhere"], ["-c", "no-such-container"]):
            code, out = gitopsctl("list-workloads", "-p", name, "--no-headers", *narrowing)
            assert code == 0 and out.strip() == "", (narrowing, out)
        code, out = gitopsctl(
            "list-workloads", "-p", name, "-n", kube_namespace, "-c", "sample-app"
        )
        assert code == 0 and f"{image}:v0.1" in out, out
        code, out = gitopsctl("list-images", "-p", name, "-n", kube_namespace, "-l", "1")
        assert code == 0 and len(out.splitlines()) == 3 and "v0.2" in out.splitlines()[2], out

        code, out = gitopsctl("list-images", "-p", name, "-w", workload)
        assert code == 0, out
        lines = [line.split() for line in out.splitlines()[1:]]
        assert lines[0][:3] == [f"{kube_namespace}:Deployment/sample-app", "sample-app", image]
        assert lines[1][0] == "v0.2" and lines[2][:2] == ["'->", "v0.1"], out

        code, out = gitopsctl("automate", "-p", name, "-w", workload, "--watch")
        assert code == 0, out
        sha = run_git(
            "log",
            "--format=%H",
            "--grep=^Automated",
            "-1",
            "refs/heads/master",
            cwd=setup.remote.bare,
        )
        assert f"Commit pushed: {sha[:7]}" in out and "Commit applied: " in out, out
        ops._wait(lambda: running() == f"{image}:v0.2", "v0.2 in the API server")
        code, out = gitopsctl("list-workloads", "-p", name, "-o", "json")
        assert code == 0 and '"automated": true' in out and f"{image}:v0.2" in out, out

        code, out = gitopsctl("lock", "-p", name, "-w", workload, "-m", "hold", "--user", "ann")
        assert code == 0 and "Commit pushed: " in out, out
        code, out = gitopsctl(
            "release", "-p", name, "--all", "--update-all-images", "--dry-run", "--force"
        )
        assert code == 0 and "Dry run: nothing committed" in out, out
        assert "locked by ann: hold" in out  # --all --force still leaves locked workloads alone

        code, out = gitopsctl("release", "-p", name, "-w", workload, "-i", f"{image}:v0.1")
        assert code == 0, out
        assert "skipped" in out and "locked by ann: hold" in out and "Nothing to commit" in out
        code, out = gitopsctl(
            "release", "-p", name, "-w", workload, "-i", f"{image}:v0.1", "--force", "--watch"
        )
        assert code == 0 and "success" in out and "Commit applied: " in out, out
        ops._wait(lambda: running() == f"{image}:v0.1", "the forced release in the API server")

        # Deautomate first: unlocked and still automated, it would move to v0.2 at once.
        code, out = gitopsctl("deautomate", "-p", name, "-w", workload)
        assert code == 0 and "Commit pushed: " in out, out
        code, out = gitopsctl("unlock", "-p", name, "-w", workload)
        assert code == 0 and "Commit pushed: " in out, out
        code, out = gitopsctl(
            "policy",
            "-p",
            name,
            "-w",
            workload,
            "--tag",
            "sample-app=semver:~0.1",
            "--automate",
            "--watch",
        )
        assert code == 0 and "Commit applied: " in out, out
        code, out = gitopsctl("list-workloads", "-p", name, "--no-headers")
        assert code == 0 and out.split()[-3:] == ["automated,", "tag.sample-app:", "semver:~0.1"]
        subjects = run_git("log", "--format=%s", "-4", "refs/heads/master", cwd=setup.remote.bare)
        assert subjects.splitlines()[:3] == [
            f"Automated, Updated tag filters: {workload}",
            f"Unlocked: {workload}",
            f"Deautomated: {workload}",
        ]

        job_id = httpx.post(
            f"{url}/api/v1/pipelines/{name}/release",
            json={"workloads": [workload], "image": f"{image}:v0.2", "dry_run": True},
            headers=ops.HEADERS,
        ).json()["job"]
        ops._wait(lambda: "status: succeeded" in gitopsctl("job", job_id)[1], "the job")
        code, out = gitopsctl("job", job_id, "-o", "json")
        assert code == 0 and '"dry_run": true' in out and '"kind": "release"' in out, out

        code, out = gitopsctl("policy", "-p", name, "-w", workload, "--tag-all", "semver:bad")
        assert code == 1 and out.startswith("Error: container (all): tag filter"), out
        code, out = gitopsctl("release", "-p", name, "--all", "-i", f"{image}:v0.1", "-w", workload)
        assert code == 2 and "give --workload (repeatable) or --all" in out, out
        code, out = gitopsctl(
            "release", "-p", name, "-w", f"{kube_namespace}:deployment/nope", "-i", f"{image}:v0.2"
        )
        assert code == 1 and "not found in the repository" in out, out
