"""Shared fixtures: the real-service test bed (private Redis, etcd + kube-apiserver, registry).

Services start lazily, once per session, on free loopback ports under one temporary directory,
and are stopped by process id at the end of the session. Tests under ``tests/integration`` are
marked ``integration`` automatically (``pytest -m "not integration"`` runs the unit tests only).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from gitops_pipeline.testbed.kube import KubeServer, start_kube
from gitops_pipeline.testbed.redis_server import RedisServer, start_redis
from gitops_pipeline.testbed.registry import RegistryServer, start_registry

INTEGRATION_DIR = Path(__file__).parent / "integration"
INTEGRATION_MARKER = "integration: needs the real test bed (Redis, kube-apiserver, registry)"


def pytest_configure(config: pytest.Config) -> None:
    registered = [str(line).split(":", 1)[0].strip() for line in config.getini("markers")]
    if "integration" not in registered:
        config.addinivalue_line("markers", INTEGRATION_MARKER)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)


def _node_hash(request: pytest.FixtureRequest) -> str:
    return hashlib.sha256(request.node.nodeid.encode()).hexdigest()


# --- session-scoped services ------------------------------------------------------------------


@pytest.fixture(scope="session")
def testbed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory for every service's state, logs and pid files in this session."""
    return tmp_path_factory.mktemp("testbed")


@pytest.fixture(scope="session")
def redis_server(testbed_dir: Path) -> Iterator[RedisServer]:
    server = start_redis(testbed_dir / "redis")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kube(testbed_dir: Path) -> Iterator[KubeServer]:
    """etcd + kube-apiserver; ``kube.kubeconfig`` is admin, ``kube.kubeconfig_for(user)``."""
    server = start_kube(testbed_dir / "kube")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def registry(testbed_dir: Path) -> Iterator[RegistryServer]:
    """An anonymous registry; tests needing auth start their own with ``start_registry``."""
    server = start_registry(testbed_dir / "registry")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kube_api_client(kube: KubeServer) -> Iterator[k8s.ApiClient]:
    """An official-client ``ApiClient`` authenticated as the admin (``system:masters``)."""
    api_client = k8s_config.new_client_from_config(config_file=str(kube.kubeconfig))
    try:
        yield api_client
    finally:
        api_client.close()


# --- per-test isolation -----------------------------------------------------------------------


@pytest.fixture
def key_prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix unique to this test (derived from its node id), e.g. ``t3f9a0c1b2d:``."""
    return f"t{_node_hash(request)[:10]}:"


@pytest.fixture
def redis_url(redis_server: RedisServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of a database of the private Redis that is empty when the test starts.

    The database (1-15, chosen from the test's node id) is flushed before and after the test;
    database 0 (``redis_server.url``) is left to session-scoped users and never flushed here.
    """
    db = 1 + int(_node_hash(request), 16) % 15
    url = redis_server.url_for_db(db)
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
        yield url
        client.flushdb()
    finally:
        client.close()


@pytest.fixture
def kube_namespace(kube_api_client: k8s.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for this test, deleted afterwards.

    There is no namespace controller in the test bed, so a deleted namespace stays
    ``Terminating`` (with its objects) until the session's API server stops.
    """
    name = f"test-{_node_hash(request)[:10]}-{secrets.token_hex(3)}"
    core = k8s.CoreV1Api(kube_api_client)
    core.create_namespace(
        k8s.V1Namespace(
            metadata=k8s.V1ObjectMeta(
                name=name, labels={"gitops-pipeline.test/node": _node_hash(request)[:10]}
            )
        )
    )
    try:
        yield name
    finally:
        try:
            core.delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                raise
