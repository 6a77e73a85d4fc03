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


# --- GnuPG signers (signature verification and sync tag tests) ---------------------------------
# Imported here rather than at the top so this section stays self-contained.

import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Callable, Mapping  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import gnupg  # noqa: E402

from gitops_pipeline.testbed.gitremote import GitRemote, run_git  # noqa: E402


@dataclass(frozen=True)
class GpgSigner:
    """A throwaway GnuPG home holding one passphrase-less signing key (ed25519)."""

    name: str
    home: Path
    fingerprint: str
    public_key: str

    @property
    def env(self) -> dict[str, str]:
        return {"GNUPGHOME": str(self.home)}

    @property
    def git_options(self) -> list[str]:
        """``git -c`` options that make ``commit -S`` / ``tag -s`` sign with this key."""
        return ["-c", f"user.signingkey={self.fingerprint}", "-c", "gpg.program=gpg"]

    def export_to(self, keys_dir: Path) -> Path:
        """Write the ASCII-armored public key into `keys_dir` (trusting it there)."""
        keys_dir.mkdir(parents=True, exist_ok=True)
        path = keys_dir / f"{self.name}.asc"
        path.write_text(self.public_key)
        return path

    def commit(self, remote: GitRemote, files: Mapping[str, str], message: str) -> str:
        """Like ``GitRemote.commit``, but the commit is signed with this key."""
        for name, text in files.items():
            (remote.work / name).parent.mkdir(parents=True, exist_ok=True)
            (remote.work / name).write_text(text)
        run_git("add", "--all", cwd=remote.work)
        sign = [*self.git_options, "commit", "--quiet", "-S"]
        run_git(*sign, "-m", message, cwd=remote.work, env=self.env)
        run_git("push", "--quiet", "origin", f"HEAD:refs/heads/{remote.branch}", cwd=remote.work)
        return remote.head()


@pytest.fixture(scope="session")
def gpg_signers() -> Iterator[Callable[[str], GpgSigner]]:
    """Make a signer per name (once per session); its key is trusted only where exported.

    Homes live directly under /tmp because gpg-agent's socket path must stay short; each
    home's agent is killed at the end of the session.
    """
    made: dict[str, GpgSigner] = {}

    def make(name: str) -> GpgSigner:
        if name not in made:
            home = Path(tempfile.mkdtemp(prefix="gpg-", dir="/tmp"))
            gpg = gnupg.GPG(gnupghome=str(home))
            key_input = gpg.gen_key_input(
                key_type="EDDSA",
                key_curve="ed25519",
                key_usage="sign",
                name_real=f"{name.title()} Signer",
                name_email=f"{name}@example.com",
                expire_date=0,
                no_protection=True,
            )
            key = gpg.gen_key(key_input)
            assert key.fingerprint, key.stderr
            made[name] = GpgSigner(
                name, home, str(key.fingerprint), str(gpg.export_keys(key.fingerprint))
            )
        return made[name]

    try:
        yield make
    finally:
        for signer in made.values():
            subprocess.run(
                ["gpgconf", "--homedir", str(signer.home), "--kill", "all"],
                capture_output=True,
                timeout=30,
                check=False,
            )
            shutil.rmtree(signer.home, ignore_errors=True)


@pytest.fixture(scope="session")
def gpg_signer(gpg_signers: Callable[[str], GpgSigner]) -> GpgSigner:
    """The usual signer ("alice"); tests decide whether her key is trusted."""
    return gpg_signers("alice")
