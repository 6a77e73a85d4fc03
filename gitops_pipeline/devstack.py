"""`make run`: the operator with embedded defaults for whatever the user does not provide.

With no config file, it runs the example: `examples/sample-app-deployment` served as a local git
remote and synced to a local Kubernetes API. With a config file, it starts only what that file
leaves out: a Redis server when `redis_url` is unreachable, a local Kubernetes API for pipelines
without a kubeconfig. Either way a local registry holding the example images is started, every
Procfile process runs under honcho, and everything started here is stopped on exit.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from gitops_pipeline.config import (
    DEFAULT_CONFIG_PATH,
    ENV_CONFIG_PATH,
    apply_env_overrides,
    parse_settings,
)
from gitops_pipeline.errors import ConfigError
from gitops_pipeline.store import check_redis
from gitops_pipeline.testbed.gitremote import GitRemote
from gitops_pipeline.testbed.kube import KubeServer, start_kube
from gitops_pipeline.testbed.process import stop_pidfile
from gitops_pipeline.testbed.redis_server import start_redis
from gitops_pipeline.testbed.registry import push_image, start_registry

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_REPO = REPO_ROOT / "examples" / "sample-app-deployment"
EXAMPLE_IMAGE = "gitopsbook/sample-app"
EXAMPLE_IMAGES = {
    "v0.1": datetime(2020, 1, 1, tzinfo=UTC),
    "v0.2": datetime(2020, 2, 1, tzinfo=UTC),
}


def _example_config(remote: GitRemote) -> dict[str, Any]:
    return {
        "pipelines": [
            {
                "name": "sample-app",
                "git": {"url": remote.url, "branch": "master", "poll_interval": "30s"},
                "sync": {"interval": "1m"},
            }
        ]
    }


def _say(line: str) -> None:
    print(f"==> {line}", flush=True)


class Stack:
    """Starts the embedded services; `ExitStack` stops each one (by pid) on the way out."""

    def __init__(self, state: Path, stack: ExitStack) -> None:
        self.state = state
        self.stack = stack
        self.kube: KubeServer | None = None
        self.registry: str | None = None

    def redis_url(self, wanted: str) -> str:
        try:
            check_redis(wanted)
            _say(f"using Redis at {wanted}")
            return wanted
        except ConfigError as exc:
            _say(f"{exc}; starting an embedded Redis")
        server = start_redis(self.state / "redis")
        self.stack.callback(server.stop)
        return server.url

    def kubeconfig(self) -> Path:
        if self.kube is None:
            _say("no kubeconfig given; starting a local Kubernetes API (etcd + kube-apiserver)")
            self.kube = start_kube(self.state / "kube")
            self.stack.callback(self.kube.stop)
        return self.kube.kubeconfig

    def registry_host(self) -> str:
        if self.registry is None:
            server = start_registry(self.state / "registry")
            self.stack.callback(server.stop)
            for tag, created in EXAMPLE_IMAGES.items():
                push_image(server.url, EXAMPLE_IMAGE, tag, created)
            _say(f"local registry at {server.url} holds {EXAMPLE_IMAGE}:{{v0.1,v0.2}}")
            self.registry = server.host
        return self.registry

    def example_remote(self) -> GitRemote:
        """The example repository, its image moved to the local registry: the seed's
        walkthrough (automate -> v0.2) then runs without reaching any public registry."""
        root = self.state / "git" / "sample-app-deployment"
        shutil.rmtree(root, ignore_errors=True)  # an earlier run's copy: serve a fresh one
        remote = GitRemote(root)
        files = {
            str(path.relative_to(EXAMPLE_REPO)): path.read_text().replace(
                f"image: {EXAMPLE_IMAGE}:", f"image: {self.registry_host()}/{EXAMPLE_IMAGE}:"
            )
            for path in sorted(EXAMPLE_REPO.rglob("*"))
            if path.is_file()
        }
        remote.commit(files, "sample-app v0.1")
        _say(f"example deployment repo served at {remote.url}")
        return remote


def _fill_defaults(config: dict[str, Any], stack: Stack) -> dict[str, str]:
    """Add embedded services and local credentials where the config has none; return them."""
    config["redis_url"] = stack.redis_url(config.get("redis_url", "redis://127.0.0.1:6379/0"))
    for pipeline in config.get("pipelines") or []:
        cluster = pipeline.setdefault("cluster", {})
        if not cluster.get("kubeconfig") and "KUBERNETES_SERVICE_HOST" not in os.environ:
            cluster["kubeconfig"] = str(stack.kubeconfig())
    registry = config.setdefault("registry", {})
    registry.setdefault("insecure_hosts", []).append(stack.registry_host())
    api = config.setdefault("api", {})
    token = ""
    if not api.get("tokens"):
        token = secrets.token_urlsafe(24)
        api["tokens"] = [{"token": token, "scope": "admin"}]
    flower = config.setdefault("flower", {})
    flower_auth = ""
    if not flower.get("basic_auth"):
        flower_auth = f"admin:{secrets.token_urlsafe(12)}"
        flower["basic_auth"] = flower_auth
    return {"token": token, "flower_auth": flower_auth}


def _banner(config: dict[str, Any], made: dict[str, str], kube: KubeServer | None) -> None:
    listen = config.get("api", {}).get("listen", "127.0.0.1:8080")
    flower = config.get("flower", {}).get("listen", "127.0.0.1:5555")
    first = (config.get("pipelines") or [{"name": "<pipeline>"}])[0]["name"]
    lines = [
        "",
        f"REST API     http://{listen}/api/v1/pipelines   (OpenAPI: http://{listen}/api/docs)",
        f"Status page  http://{listen}/",
        f"Flower       http://{flower}/"
        + (f"   (basic auth {made['flower_auth']})" if made["flower_auth"] else ""),
        "",
        "Try:",
        f"  export GITOPS_URL=http://{listen}"
        + (f" GITOPS_TOKEN={made['token']}" if made["token"] else ""),
        "  .venv/bin/gitopsctl pipelines",
        f"  .venv/bin/gitopsctl sync -p {first}",
        f"  .venv/bin/gitopsctl status -p {first}",
        f"  .venv/bin/gitopsctl list-workloads -p {first}",
        f"  .venv/bin/gitopsctl list-images -p {first}",
    ]
    if kube is not None:
        lines += [
            f"  .venv/bin/gitopsctl automate -p {first} -w default:deployment/sample-app --watch",
            f"  kubectl --kubeconfig {kube.kubeconfig} get deploy,svc sample-app",
        ]
    lines += ["", "Ctrl-C stops every process started here.", ""]
    print("\n".join(lines), flush=True)


def _run_procfile(config_path: Path) -> int:
    env = {
        **os.environ,
        ENV_CONFIG_PATH: str(config_path),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
    }
    honcho = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "honcho",
            "start",
            "-f",
            str(REPO_ROOT / "Procfile"),
            "-d",
            str(REPO_ROOT),
        ],
        env=env,
        cwd=REPO_ROOT,
    )

    def forward(signum: int, _: FrameType | None) -> None:
        honcho.send_signal(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    return honcho.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run gitops-pipeline with embedded defaults")
    parser.add_argument(
        "--config", help=f"your config (default: ${ENV_CONFIG_PATH} or gitops.yaml)"
    )
    parser.add_argument("--state-dir", default=str(REPO_ROOT / ".run"))
    args = parser.parse_args(argv)
    user_config = args.config or os.environ.get(ENV_CONFIG_PATH)
    if user_config is None and DEFAULT_CONFIG_PATH.exists():
        user_config = str(DEFAULT_CONFIG_PATH)
    state = Path(args.state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    for pid_file in state.rglob("*.pid"):  # services of an earlier run that was killed hard
        if stop_pidfile(pid_file, expect=pid_file.stem):
            _say(f"stopped {pid_file.stem} left over from an earlier run")
    with ExitStack() as services:
        stack = Stack(state, services)
        try:
            if user_config:
                config = yaml.safe_load(Path(user_config).read_text()) or {}
                _say(f"using config {user_config}")
            else:
                config = _example_config(stack.example_remote())
                _say("no config given; running the sample-app example")
            apply_env_overrides(config, os.environ)
            made = _fill_defaults(config, stack)
            text = yaml.safe_dump(config, sort_keys=False)
            parse_settings(text, user_config or "embedded example config", os.environ)
        except (ConfigError, OSError, RuntimeError) as exc:
            print(f"gitops-pipeline: error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        config_path = state / "gitops.yaml"
        config_path.write_text(text)
        config_path.chmod(0o600)  # it holds the generated API token and Flower password
        _banner(config, made, stack.kube)
        code = _run_procfile(config_path)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
