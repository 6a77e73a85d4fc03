"""The test bed starts real services, they behave as configured, and stop() leaves no process."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from gitops_pipeline.testbed.kube import KubeServer, start_kube
from gitops_pipeline.testbed.process import ManagedProcess, free_port, stop_pidfile
from gitops_pipeline.testbed.redis_server import RedisServer, start_redis
from gitops_pipeline.testbed.registry import (
    MANIFEST_LIST_V2,
    MANIFEST_V2,
    RegistryServer,
    push_image,
    start_registry,
)

pytestmark = pytest.mark.integration

MANIFEST_ACCEPT = f"{MANIFEST_LIST_V2}, {MANIFEST_V2}"


def _gone(pid: int, timeout: float = 5.0) -> bool:
    """Whether ``pid`` no longer exists (a zombie awaiting a foreign reaper counts as gone)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.kill(pid, 0)
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state == "Z":
                return True
        except (ProcessLookupError, FileNotFoundError):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


# --- Redis ------------------------------------------------------------------------------------


def test_redis_ping_and_noeviction(redis_server: RedisServer, redis_url: str, key_prefix: str):
    assert redis_server.port != 6379
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert client.ping() is True
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        assert client.dbsize() == 0
        client.set(f"{key_prefix}probe", "1")
        assert client.get(f"{key_prefix}probe") == "1"
    finally:
        client.close()


# --- Kubernetes API ---------------------------------------------------------------------------


def test_kube_server_side_apply_configmap(kube_api_client: k8s.ApiClient, kube_namespace: str):
    configmaps = DynamicClient(kube_api_client).resources.get(api_version="v1", kind="ConfigMap")
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "labels": {"app": "demo"}},
        "data": {"colour": "blue"},
    }
    for colour in ("blue", "green"):
        body["data"]["colour"] = colour
        configmaps.server_side_apply(
            body=body,
            namespace=kube_namespace,
            field_manager="gitops-pipeline",
            force_conflicts=True,
        )

    read = k8s.CoreV1Api(kube_api_client).read_namespaced_config_map("settings", kube_namespace)
    assert read.data == {"colour": "green"}
    assert read.metadata.labels == {"app": "demo"}
    managers = {(f.manager, f.operation) for f in read.metadata.managed_fields}
    assert ("gitops-pipeline", "Apply") in managers


def test_kube_tenant_cannot_list_namespaces(kube: KubeServer, kube_api_client: k8s.ApiClient):
    names = {ns.metadata.name for ns in k8s.CoreV1Api(kube_api_client).list_namespace().items}
    assert {"default", "kube-system"} <= names

    assert set(kube.tokens) == {"admin", "tenant-a", "tenant-b"}
    tenant = k8s_config.new_client_from_config(config_file=str(kube.kubeconfig_for("tenant-a")))
    try:
        with pytest.raises(ApiException) as caught:
            k8s.CoreV1Api(tenant).list_namespace()
        assert caught.value.status == 403
    finally:
        tenant.close()


def test_kube_readyz_needs_the_ca_and_a_token(kube: KubeServer):
    with httpx.Client(verify=False) as insecure:  # noqa: S501 - checking auth, not TLS
        assert insecure.get(f"{kube.url}/api/v1/namespaces").status_code in (401, 403)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{kube.url}/readyz")  # the self-signed CA is not in the default trust store


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kubeconfig_works_with_kubectl(kube: KubeServer, kube_namespace: str):
    result = subprocess.run(
        ["kubectl", "--kubeconfig", str(kube.kubeconfig), "get", "namespace", kube_namespace,
         "-o", "jsonpath={.metadata.name}"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == kube_namespace


# --- registry ---------------------------------------------------------------------------------


def test_registry_push_image_with_created_and_labels(registry: RegistryServer):
    created = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    digest = push_image(
        registry.url, "team/app", "1.2.3", created, labels={"org.example.revision": "abc123"}
    )
    assert digest.startswith("sha256:")

    tags = httpx.get(f"{registry.url}/v2/team/app/tags/list").json()
    assert "1.2.3" in tags["tags"]

    manifest = httpx.get(
        f"{registry.url}/v2/team/app/manifests/1.2.3", headers={"Accept": MANIFEST_ACCEPT}
    )
    assert manifest.status_code == 200
    assert manifest.headers["Docker-Content-Digest"] == digest
    assert manifest.json()["mediaType"] == MANIFEST_V2
    assert manifest.json()["layers"] == []

    config_digest = manifest.json()["config"]["digest"]
    config = httpx.get(
        f"{registry.url}/v2/team/app/blobs/{config_digest}", follow_redirects=True
    ).json()
    assert config["created"] == "2024-05-06T07:08:09Z"
    assert config["config"]["Labels"] == {"org.example.revision": "abc123"}
    assert (config["os"], config["architecture"]) == ("linux", "amd64")


def test_registry_push_manifest_list(registry: RegistryServer):
    created = datetime(2024, 6, 1, tzinfo=UTC)
    digest = push_image(
        registry.url, "team/multi", "v1", created, platforms=["linux/amd64", "linux/arm64/v8"]
    )
    response = httpx.get(
        f"{registry.url}/v2/team/multi/manifests/v1", headers={"Accept": MANIFEST_ACCEPT}
    )
    assert response.status_code == 200
    assert response.headers["Docker-Content-Digest"] == digest
    listing = response.json()
    assert listing["mediaType"] == MANIFEST_LIST_V2
    platforms = [
        (m["platform"]["os"], m["platform"]["architecture"], m["platform"].get("variant"))
        for m in listing["manifests"]
    ]
    assert platforms == [("linux", "amd64", None), ("linux", "arm64", "v8")]
    for entry in listing["manifests"]:
        child = httpx.get(
            f"{registry.url}/v2/team/multi/manifests/{entry['digest']}",
            headers={"Accept": MANIFEST_V2},
        )
        assert child.status_code == 200
        assert child.headers["Docker-Content-Digest"] == entry["digest"]
        config = httpx.get(
            f"{registry.url}/v2/team/multi/blobs/{child.json()['config']['digest']}",
            follow_redirects=True,
        ).json()
        assert config["architecture"] == entry["platform"]["architecture"]
        assert config["created"] == "2024-06-01T00:00:00Z"


def test_registry_basic_auth_and_stop(tmp_path: Path):
    server = start_registry(tmp_path / "registry", htpasswd_users={"alice": "wonderland"})
    pid = server.pid
    try:
        assert httpx.get(f"{server.url}/v2/").status_code == 401
        assert httpx.get(f"{server.url}/v2/", auth=("alice", "nope")).status_code == 401
        assert httpx.get(f"{server.url}/v2/", auth=("alice", "wonderland")).status_code == 200
        assert server.auth == ("alice", "wonderland")

        with pytest.raises(RuntimeError, match="401"):
            push_image(server.url, "private/app", "1", datetime.now(UTC))
        digest = push_image(server.url, "private/app", "1", datetime.now(UTC), auth=server.auth)
        tags = httpx.get(f"{server.url}/v2/private/app/tags/list", auth=server.auth).json()
        assert tags["tags"] == ["1"]
        manifest = httpx.head(
            f"{server.url}/v2/private/app/manifests/1",
            headers={"Accept": MANIFEST_V2},
            auth=server.auth,
        )
        assert manifest.headers["Docker-Content-Digest"] == digest
    finally:
        server.stop()
    assert _gone(pid)
    assert not server.process.pid_path.exists()


# --- stop() leaves nothing behind -------------------------------------------------------------


def test_redis_stop_leaves_no_process(tmp_path: Path):
    server = start_redis(tmp_path / "redis")
    pid = server.pid
    assert server.process.pid_path.read_text().strip() == str(pid)
    assert redis.Redis(port=server.port).ping()
    server.stop()
    assert _gone(pid)
    assert not server.process.pid_path.exists()
    server.stop()  # idempotent


def test_kube_stop_leaves_no_process(tmp_path: Path):
    server = start_kube(tmp_path / "kube", tenants=())
    pids = [server.apiserver.pid, server.etcd.pid]
    assert set(server.tokens) == {"admin"}
    assert server.startup_seconds < 90
    server.stop()
    assert all(_gone(pid) for pid in pids)
    assert not any(p.exists() for p in (server.apiserver.pid_path, server.etcd.pid_path))


def test_stop_kills_the_whole_process_group(tmp_path: Path):
    # The leader dies on SIGTERM; its child ignores SIGTERM and must be swept by SIGKILL.
    child_pid_file = tmp_path / "child.pid"
    script = f'(trap "" TERM; exec sleep 300) & echo $! > {child_pid_file}; wait'
    process = ManagedProcess("group", ["sh", "-c", script], tmp_path).start()
    process.wait_until_ready(child_pid_file.exists, 10, what="child pid file")
    time.sleep(0.1)
    child = int(child_pid_file.read_text())
    process.stop(timeout=2)
    assert _gone(process.pid)
    assert _gone(child)


def test_stop_escalates_to_sigkill(tmp_path: Path):
    ready = tmp_path / "trap-installed"
    script = f'trap "" TERM; touch {ready}; sleep 300'
    process = ManagedProcess("stubborn", ["sh", "-c", script], tmp_path).start()
    process.wait_until_ready(ready.exists, 10, what="SIGTERM trap")
    started = time.monotonic()
    assert process.stop(timeout=0.5) == -9
    assert time.monotonic() - started < 5
    assert _gone(process.pid)


def test_early_exit_raises_with_log_tail(tmp_path: Path):
    port = free_port()
    process = ManagedProcess("broken", ["sh", "-c", "echo boom-from-service >&2; exit 3"], tmp_path)
    process.start()
    with pytest.raises(RuntimeError, match=r"(?s)exited early with code 3.*boom-from-service"):
        process.wait_for_port("127.0.0.1", port, timeout=10)
    assert not process.pid_path.exists()


def test_readiness_timeout_raises_and_stops(tmp_path: Path):
    process = ManagedProcess("silent", ["sleep", "300"], tmp_path).start()
    with pytest.raises(RuntimeError, match=r"not ready after 1s"):
        process.wait_for_port("127.0.0.1", free_port(), timeout=1)
    assert _gone(process.pid)


def test_stop_pidfile_cleans_up_a_leftover_service(tmp_path: Path):
    process = ManagedProcess("leftover", ["sleep", "300"], tmp_path).start()
    # Ready once the forked child has exec'd `sleep` (before that its argv[0] is Python's).
    process.wait_until_ready(
        lambda: Path(f"/proc/{process.pid}/cmdline").read_bytes().startswith(b"sleep"), 5
    )
    try:
        assert stop_pidfile(process.pid_path, expect="redis-server") is False  # not ours
        assert process.running()
        process.pid_path.write_text(f"{process.pid}\n")
        assert stop_pidfile(process.pid_path, expect="sleep", timeout=5) is True
        assert _gone(process.pid)
        assert not process.pid_path.exists()
    finally:
        process.stop()
    assert stop_pidfile(tmp_path / "missing.pid") is False


def test_missing_executable_is_a_clear_error(tmp_path: Path):
    with pytest.raises(RuntimeError, match="executable not found"):
        ManagedProcess("nothing", ["/nonexistent/binary"], tmp_path).start()


def test_kubeconfigs_name_the_testbed_context_ca_and_token(kube: KubeServer):
    for user, path in (("admin", kube.kubeconfig), ("tenant-b", kube.kubeconfig_for("tenant-b"))):
        config = yaml.safe_load(path.read_text())
        assert config["current-context"] == "testbed"
        cluster = config["clusters"][0]["cluster"]
        assert cluster == {"server": kube.url, "certificate-authority": str(kube.ca_file)}
        assert config["users"][0] == {"name": user, "user": {"token": kube.tokens[user]}}
    assert kube.tokens["admin"] == kube.admin_token
    assert kube.ca_file == kube.workdir / "certs" / "apiserver.crt"
    with pytest.raises(KeyError):
        kube.kubeconfig_for("nobody")
