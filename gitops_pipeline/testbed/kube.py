"""A real Kubernetes API server for tests: etcd + kube-apiserver on loopback, no kubelet.

There is no controller-manager and no scheduler: objects are stored and validated (server-side
apply, RBAC, admission) but nothing reconciles them. In particular a deleted namespace stays
``Terminating`` and owner references never cascade.
"""

from __future__ import annotations

import os
import platform
import secrets
import shutil
import ssl
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from gitops_pipeline.testbed.process import HOST, ManagedProcess, free_port

ETCD_READY_TIMEOUT = 30.0
APISERVER_READY_TIMEOUT = 90.0
CONTEXT = "testbed"
ADMIN_USER = "admin"
DEFAULT_TENANTS: tuple[str, ...] = ("tenant-a", "tenant-b")

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-kube-apiserver.sh"


def find_kube_apiserver() -> str:
    """Path of the kube-apiserver binary: ``$GITOPS_KUBE_APISERVER``, else the build script's.

    ``scripts/build-kube-apiserver.sh`` prints the cached binary at once; on a machine where it
    has never run it builds one first (about 5 minutes).
    """
    override = os.environ.get("GITOPS_KUBE_APISERVER")
    if override:
        if not os.access(override, os.X_OK):
            raise RuntimeError(f"GITOPS_KUBE_APISERVER={override!r} is not an executable")
        return override
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], check=False, capture_output=True, text=True
    )
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise RuntimeError(
            f"{BUILD_SCRIPT} failed (exit {result.returncode}):\n{result.stderr[-4000:]}"
        )
    binary = lines[-1]
    if not os.access(binary, os.X_OK):
        raise RuntimeError(f"{BUILD_SCRIPT} printed {binary!r}, which is not an executable")
    return binary


@dataclass(eq=False)
class KubeServer:
    """A running etcd + kube-apiserver pair, with bearer tokens for an admin and tenants."""

    url: str
    port: int
    workdir: Path
    ca_file: Path
    kubeconfig: Path
    admin_token: str
    tokens: dict[str, str]
    etcd: ManagedProcess
    apiserver: ManagedProcess
    etcd_url: str
    startup_seconds: float = 0.0
    _kubeconfigs: dict[str, Path] = field(default_factory=dict, repr=False)

    def kubeconfig_for(self, user: str) -> Path:
        """Write (once) and return a kubeconfig that authenticates as ``user``."""
        if user not in self.tokens:
            raise KeyError(f"no token for user {user!r}; known: {sorted(self.tokens)}")
        path = self._kubeconfigs.get(user)
        if path is None:
            path = self.workdir / f"kubeconfig-{user}.yaml"
            write_kubeconfig(path, self.url, self.ca_file, user, self.tokens[user])
            self._kubeconfigs[user] = path
        return path

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd."""
        try:
            self.apiserver.stop()
        finally:
            self.etcd.stop()


def write_kubeconfig(path: Path, server: str, ca_file: Path, user: str, token: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CONTEXT,
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": user}}],
        "current-context": CONTEXT,
        "preferences": {},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


def _etcd_healthy(client_url: str) -> bool:
    response = httpx.get(f"{client_url}/health", timeout=2.0)
    return response.status_code == 200 and response.json().get("health") == "true"


def _apiserver_ready(url: str, ca_file: Path, token: str) -> bool:
    if not ca_file.exists():
        return False
    context = ssl.create_default_context(cafile=str(ca_file))
    response = httpx.get(
        f"{url}/readyz",
        headers={"Authorization": f"Bearer {token}"},
        verify=context,
        timeout=5.0,
    )
    return response.status_code == 200


def start_etcd(workdir: Path, *, executable: str | None = None) -> tuple[ManagedProcess, str]:
    """Start a single-member etcd on loopback; returns the process and its client URL."""
    binary = executable or shutil.which("etcd") or "/usr/bin/etcd"
    workdir.mkdir(parents=True, exist_ok=True)
    client_port, peer_port = free_port(HOST), free_port(HOST)
    client_url, peer_url = f"http://{HOST}:{client_port}", f"http://{HOST}:{peer_port}"
    argv = [
        binary,
        "--name", "testbed",
        "--data-dir", str(workdir / "etcd-data"),
        "--listen-client-urls", client_url,
        "--advertise-client-urls", client_url,
        "--listen-peer-urls", peer_url,
        "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", f"testbed={peer_url}",
        "--initial-cluster-state", "new",
        "--initial-cluster-token", f"testbed-{secrets.token_hex(4)}",
        "--logger", "zap",
        "--log-outputs", "stderr",
    ]  # fmt: skip
    # Only the flags above configure etcd: drop any ETCD_* settings from our environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
    if platform.machine() in ("aarch64", "arm64"):
        env["ETCD_UNSUPPORTED_ARCH"] = "arm64"  # etcd 3.4 refuses arm64 without it
    process = ManagedProcess("etcd", argv, workdir, env=env).start()
    process.wait_until_ready(
        lambda: _etcd_healthy(client_url), ETCD_READY_TIMEOUT, what=f"{client_url}/health"
    )
    return process, client_url


def _generate_service_account_key(workdir: Path) -> tuple[Path, Path]:
    key, pub = workdir / "sa.key", workdir / "sa.pub"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    subprocess.run(
        ["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(pub)],
        check=True,
        capture_output=True,
    )
    key.chmod(0o600)
    return key, pub


def _write_token_file(path: Path, tokens: dict[str, str]) -> None:
    lines = []
    for user, token in tokens.items():
        groups = ',"system:masters"' if user == ADMIN_USER else ""
        lines.append(f"{token},{user},{user}{groups}\n")
    path.write_text("".join(lines))
    path.chmod(0o600)


def start_kube(
    workdir: Path,
    *,
    tenants: Sequence[str] = DEFAULT_TENANTS,
    apiserver: str | None = None,
) -> KubeServer:
    """Start etcd, then kube-apiserver (RBAC, token auth), and write an admin kubeconfig.

    ``tenants`` are extra users with a token and no groups beyond ``system:authenticated``.
    """
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    binary = apiserver or find_kube_apiserver()
    started = time.monotonic()

    tokens = {user: secrets.token_urlsafe(32) for user in (ADMIN_USER, *tenants)}
    token_file = workdir / "tokens.csv"
    _write_token_file(token_file, tokens)
    sa_key, sa_pub = _generate_service_account_key(workdir)
    cert_dir = workdir / "certs"
    cert_dir.mkdir(exist_ok=True)
    ca_file = cert_dir / "apiserver.crt"

    etcd, etcd_url = start_etcd(workdir)
    try:
        port = free_port(HOST)
        argv = [
            binary,
            f"--etcd-servers={etcd_url}",
            f"--bind-address={HOST}",
            f"--secure-port={port}",
            f"--advertise-address={HOST}",
            f"--cert-dir={cert_dir}",
            f"--token-auth-file={token_file}",
            "--authorization-mode=RBAC",
            f"--service-account-key-file={sa_pub}",
            f"--service-account-signing-key-file={sa_key}",
            "--service-account-issuer=https://kubernetes.default.svc",
            "--insecure-port=0",
            "--service-cluster-ip-range=10.96.0.0/12",
            "--endpoint-reconciler-type=none",
        ]
        process = ManagedProcess("kube-apiserver", argv, workdir).start()
        url = f"https://{HOST}:{port}"
        try:
            process.wait_until_ready(
                lambda: _apiserver_ready(url, ca_file, tokens[ADMIN_USER]),
                APISERVER_READY_TIMEOUT,
                interval=0.25,
                what=f"{url}/readyz",
            )
        except BaseException:
            process.stop()
            raise
    except BaseException:
        etcd.stop()
        raise

    kubeconfig = workdir / "kubeconfig.yaml"
    write_kubeconfig(kubeconfig, url, ca_file, ADMIN_USER, tokens[ADMIN_USER])
    server = KubeServer(
        url=url,
        port=port,
        workdir=workdir,
        ca_file=ca_file,
        kubeconfig=kubeconfig,
        admin_token=tokens[ADMIN_USER],
        tokens=tokens,
        etcd=etcd,
        apiserver=process,
        etcd_url=etcd_url,
        startup_seconds=time.monotonic() - started,
    )
    server._kubeconfigs[ADMIN_USER] = kubeconfig
    return server
