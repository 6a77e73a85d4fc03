"""End to end: a real Celery worker on real Redis syncs a bare git repo to a real API server."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import kubernetes.config
import pytest
import redis
import yaml
from celery.contrib.testing.worker import start_worker
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from gitops_pipeline import runtime
from gitops_pipeline.celery_app import app, configure
from gitops_pipeline.config import Pipeline, Settings, parse_settings
from gitops_pipeline.events import recent
from gitops_pipeline.store import Keys
from gitops_pipeline.tasks import sync
from gitops_pipeline.testbed.gitremote import GitRemote, run_git
from gitops_pipeline.testbed.kube import KubeServer
from gitops_pipeline.testbed.redis_server import RedisServer

if TYPE_CHECKING:
    from tests.conftest import GpgSigner

EXAMPLE = Path(__file__).parents[2] / "examples" / "sample-app-deployment"
SYNC_WAIT = 90.0  # an upper bound for the wait, not a speed check


def worker_settings(redis_url: str, work_dir: Path, **extra: Any) -> Settings:
    """Settings for a real worker in this process, bound (`configure`) to the one Redis and
    key prefix every module's worker uses: Celery binds a process to one broker, so tests share
    them and each test adds its own pipeline (own name, git remote and namespace)."""
    config = {"redis_url": redis_url, "key_prefix": "e2e:", "work_dir": str(work_dir), **extra}
    settings = parse_settings(yaml.safe_dump(config), "test-config", {})
    configure(settings)
    return settings


@pytest.fixture(scope="module")
def worker(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """One real Celery worker (solo pool, in this process) for the module's tests."""
    base = worker_settings(redis_server.url, tmp_path_factory.mktemp("work"))
    with start_worker(
        app, pool="solo", queues=["sync", "default"], perform_ping_check=False, shutdown_timeout=30
    ):
        yield base


@dataclass
class Env:
    settings: Settings
    remote: GitRemote
    namespace: str
    name: str

    def sync(self, full: bool = False) -> dict[str, Any]:
        """Trigger a sync and wait for its result to be recorded (finished or failed)."""
        client = redis.Redis.from_url(self.settings.redis_url, decode_responses=True)
        key = Keys(self.settings.key_prefix).sync(self.name)
        client.delete(key)
        sync.trigger.delay(self.name, full=full)
        deadline = time.monotonic() + SYNC_WAIT
        while time.monotonic() < deadline:
            state = client.hgetall(key)
            if state.get("status") in {"synced", "synced-with-errors", "failed"}:
                return state
            time.sleep(0.2)
        raise AssertionError(f"no sync result within {SYNC_WAIT}s: {client.hgetall(key)}")

    def events(self) -> list[str]:
        client = redis.Redis.from_url(self.settings.redis_url, decode_responses=True)
        return [e.message for e in recent(client, Keys(self.settings.key_prefix), self.name)]


EnvFactory = Callable[..., Env]


@pytest.fixture
def make_env(
    worker: Settings, kube: KubeServer, kube_namespace: str, key_prefix: str, tmp_path: Path
) -> EnvFactory:
    """Builds a pipeline over a fresh git remote holding the example; options go into its spec."""

    def build(kubeconfig: Path | None = None, signer: GpgSigner | None = None, **spec: Any) -> Env:
        remote = GitRemote(tmp_path / "git")
        if signer is None:
            remote.commit_tree(EXAMPLE, "sample-app v0.1")
        else:
            files = {p.name: p.read_text() for p in sorted(EXAMPLE.iterdir())}
            signer.commit(remote, files, "sample-app v0.1 (signed)")
        name = f"app-{key_prefix.strip(':')}"
        cluster = {
            "kubeconfig": str(kubeconfig or kube.kubeconfig),
            "default_namespace": kube_namespace,
        }
        pipeline = {
            "name": name,
            "git": {"url": remote.url, "branch": "master", **spec.pop("git", {})},
            **spec,
            "cluster": {**cluster, **spec.get("cluster", {})},
        }
        settings = worker.model_copy(update={"pipelines": [Pipeline.model_validate(pipeline)]})
        runtime.init(settings)
        return Env(settings, remote, kube_namespace, name)

    return build


@pytest.fixture
def env(make_env: EnvFactory) -> Env:
    return make_env()


def _image(kube_client: k8s.ApiClient, namespace: str) -> str:
    deployment = k8s.AppsV1Api(kube_client).read_namespaced_deployment("sample-app", namespace)
    return str(deployment.spec.template.spec.containers[0].image)


def test_sample_app_syncs_and_follows_git(env: Env, kube_api_client: k8s.ApiClient) -> None:
    remote, namespace = env.remote, env.namespace
    state = env.sync()
    assert state["status"] == "synced", state
    assert state["applied"] == "2"
    assert state["revision"] == remote.head()
    assert _image(kube_api_client, namespace) == "gitopsbook/sample-app:v0.1"
    service = k8s.CoreV1Api(kube_api_client).read_namespaced_service("sample-app", namespace)
    assert service.spec.ports[0].target_port == 8080
    managers = (
        k8s.AppsV1Api(kube_api_client)
        .read_namespaced_deployment("sample-app", namespace)
        .metadata.managed_fields
    )
    assert any(m.manager == "gitops-pipeline" and m.operation == "Apply" for m in managers)

    text = (EXAMPLE / "deployment.yaml").read_text().replace("v0.1", "v0.2")
    new_head = remote.commit({"deployment.yaml": text}, "sample-app v0.2")
    state = env.sync()
    assert state["status"] == "synced", state
    assert state["revision"] == new_head
    assert _image(kube_api_client, namespace) == "gitopsbook/sample-app:v0.2"


def test_bad_revision_is_reported_and_nothing_is_applied(
    env: Env, kube_api_client: k8s.ApiClient
) -> None:
    remote, namespace = env.remote, env.namespace
    assert env.sync()["status"] == "synced"

    # One good change and one broken file in the same revision: nothing of it may be applied.
    text = (EXAMPLE / "deployment.yaml").read_text().replace("v0.1", "v0.3")
    remote.commit({"deployment.yaml": text, "broken.yaml": "kind: [\n"}, "half broken")
    state = env.sync()
    assert state["status"] == "failed"
    assert state["error"].startswith("generate failed: broken.yaml:2:")
    assert _image(kube_api_client, namespace) == "gitopsbook/sample-app:v0.1"
    assert any(m.startswith("generate failed: broken.yaml:2:") for m in env.events())

    # The worker keeps serving: fixing the file syncs again.
    remote.commit({"broken.yaml": None}, "fix")
    assert env.sync()["status"] == "synced"
    assert _image(kube_api_client, namespace) == "gitopsbook/sample-app:v0.3"


def test_per_object_errors_do_not_stop_the_others(env: Env, kube_api_client: k8s.ApiClient) -> None:
    remote, namespace = env.remote, env.namespace
    bad = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "Not_A_Valid_Name"},
        "data": {"a": "b"},
    }
    remote.commit({"bad-configmap.yaml": yaml.safe_dump(bad)}, "invalid object name")
    state = env.sync()
    assert state["status"] == "synced-with-errors"
    assert state["applied"] == "2"
    errors = json.loads(state["errors"])
    assert list(errors) == [f"{namespace}:ConfigMap/Not_A_Valid_Name"]
    assert "422" in errors[f"{namespace}:ConfigMap/Not_A_Valid_Name"]
    assert _image(kube_api_client, namespace) == "gitopsbook/sample-app:v0.1"


def _exists(
    kind: str, kube_client: k8s.ApiClient, namespace: str, name: str = "sample-app"
) -> bool:
    read = {
        "Service": k8s.CoreV1Api(kube_client).read_namespaced_service,
        "Deployment": k8s.AppsV1Api(kube_client).read_namespaced_deployment,
        "ConfigMap": k8s.CoreV1Api(kube_client).read_namespaced_config_map,
    }[kind]
    try:
        read(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


@pytest.mark.parametrize("mode", [True, False, "dry-run"], ids=["gc-on", "gc-off", "gc-dry-run"])
def test_removed_object_and_garbage_collection(
    make_env: EnvFactory, kube_api_client: k8s.ApiClient, mode: bool | str
) -> None:
    env = make_env(sync={"garbage_collection": mode})
    assert env.sync()["status"] == "synced"
    assert _exists("Service", kube_api_client, env.namespace)

    env.remote.commit({"service.yaml": None}, "remove the service")
    state = env.sync()
    assert state["status"] == "synced"
    assert _exists("Service", kube_api_client, env.namespace) is (mode is not True)
    assert _exists("Deployment", kube_api_client, env.namespace)
    ref = f"{env.namespace}:Service/sample-app"
    messages = env.events()
    assert (f"{ref}: deleted (no longer in Git)" in messages) is (mode is True)
    assert (f"{ref}: would be deleted (no longer in Git)" in messages) is (mode == "dry-run")


def test_gc_keeps_objects_changed_by_someone_else(
    make_env: EnvFactory, kube_api_client: k8s.ApiClient
) -> None:
    env = make_env(sync={"garbage_collection": True})
    assert env.sync()["status"] == "synced"
    k8s.CoreV1Api(kube_api_client).patch_namespaced_service(
        "sample-app",
        env.namespace,
        {"metadata": {"annotations": {"gitops-pipeline.io/checksum": "edited-by-hand"}}},
    )
    env.remote.commit({"service.yaml": None}, "remove the service")
    assert env.sync()["status"] == "synced"
    assert _exists("Service", kube_api_client, env.namespace)
    assert (
        f"{env.namespace}:Service/sample-app: not deleted: changed since this pipeline applied "
        "it (checksum differs)"
    ) in env.events()


def test_new_revision_applies_changes_only_and_the_tick_corrects_drift(
    env: Env, kube_api_client: k8s.ApiClient
) -> None:
    assert env.sync()["status"] == "synced"
    apps = k8s.AppsV1Api(kube_api_client)
    drift = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [{"name": "sample-app", "image": "gitopsbook/sample-app:drifted"}]
                }
            }
        }
    }
    apps.patch_namespaced_deployment("sample-app", env.namespace, drift)

    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "extra"},
        "data": {"k": "v"},
    }
    env.remote.commit({"configmap.yaml": yaml.safe_dump(configmap)}, "add a configmap")
    state = env.sync(full=False)
    assert (state["applied"], state["unchanged"]) == ("1", "2")
    assert _exists("ConfigMap", kube_api_client, env.namespace, "extra")
    assert _image(kube_api_client, env.namespace) == "gitopsbook/sample-app:drifted"

    state = env.sync(full=True)
    assert (state["applied"], state["unchanged"]) == ("3", "0")
    assert _image(kube_api_client, env.namespace) == "gitopsbook/sample-app:v0.1"


def test_ignore_annotation_in_git_and_on_the_live_object(
    env: Env, kube_api_client: k8s.ApiClient
) -> None:
    ignored = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "hands-off", "annotations": {"fluxcd.io/ignore": "true"}},
    }
    env.remote.commit({"ignored.yaml": yaml.safe_dump(ignored)}, "an ignored object")
    state = env.sync()
    assert (state["applied"], state["ignored"]) == ("2", "1")
    assert not _exists("ConfigMap", kube_api_client, env.namespace, "hands-off")

    k8s.AppsV1Api(kube_api_client).patch_namespaced_deployment(
        "sample-app",
        env.namespace,
        {"metadata": {"annotations": {"flux.weave.works/ignore": "true"}}},
    )
    text = (EXAMPLE / "deployment.yaml").read_text().replace("v0.1", "v0.2")
    env.remote.commit({"deployment.yaml": text}, "v0.2")
    state = env.sync(full=True)
    assert (state["applied"], state["ignored"]) == ("1", "2")
    assert _image(kube_api_client, env.namespace) == "gitopsbook/sample-app:v0.1"


def test_tenant_pipeline_is_held_to_its_namespace(
    make_env: EnvFactory, kube: KubeServer, kube_api_client: k8s.ApiClient, kube_namespace: str
) -> None:
    rbac = k8s.RbacAuthorizationV1Api(kube_api_client)
    # The built-in `admin` role is aggregated by the controller manager, which the test bed
    # lacks, so the tenant gets an explicit all-in-its-namespace Role instead.
    rbac.create_namespaced_role(
        kube_namespace,
        {
            "metadata": {"name": "tenant-a-all"},
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        kube_namespace,
        {
            "metadata": {"name": "tenant-a-all"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "tenant-a-all",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "tenant-a"}
            ],
        },
    )
    tenant = k8s.CoreV1Api(
        kubernetes.config.new_client_from_config(config_file=str(kube.kubeconfig_for("tenant-a")))
    )
    deadline = time.monotonic() + 30
    while True:  # the API server's RBAC cache picks new bindings up asynchronously
        try:
            tenant.list_namespaced_config_map(kube_namespace)
            break
        except ApiException:
            assert time.monotonic() < deadline, "the tenant's role binding never took effect"
            time.sleep(0.2)
    env = make_env(
        kubeconfig=kube.kubeconfig_for("tenant-a"),
        cluster={"allow_namespaces": [kube_namespace]},
    )
    outside = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "elsewhere", "namespace": "kube-system"},
    }
    cluster_scoped = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "grab"}}
    env.remote.commit(
        {"outside.yaml": yaml.safe_dump(outside), "ns.yaml": yaml.safe_dump(cluster_scoped)},
        "objects out of the tenant's reach",
    )
    state = env.sync()
    assert state["status"] == "synced-with-errors"
    assert state["applied"] == "2"
    assert json.loads(state["errors"]) == {
        "kube-system:ConfigMap/elsewhere": (
            "refused: namespace 'kube-system' is not in allow_namespaces"
        ),
        "<cluster>:Namespace/grab": (
            "refused: cluster-scoped objects are not allowed for this pipeline"
        ),
    }
    assert _image(kube_api_client, env.namespace) == "gitopsbook/sample-app:v0.1"


def test_triggers_during_a_sync_coalesce_into_one_rerun(env: Env) -> None:
    client = redis.Redis.from_url(env.settings.redis_url, decode_responses=True)
    key = Keys(env.settings.key_prefix).sync(env.name)
    for _ in range(6):
        sync.trigger.delay(env.name)
    deadline = time.monotonic() + SYNC_WAIT
    while time.monotonic() < deadline:
        starts = [m for m in env.events() if m.startswith("sync started")]
        applied = [m for m in env.events() if m.startswith("applied ")]
        if len(applied) >= 2 and not client.exists(
            Keys(env.settings.key_prefix).sync_run(env.name)
        ):
            break
        time.sleep(0.2)
    time.sleep(1)  # nothing more may start after the rerun
    starts = [m for m in env.events() if m.startswith("sync started")]
    applied = [m for m in env.events() if m.startswith("applied ")]
    assert len(starts) == 2, env.events()
    assert len(applied) == 2
    assert client.hget(key, "status") == "synced"


@pytest.mark.parametrize("mode", ["all", "first-parent"])
def test_signed_history_syncs_and_an_unsigned_commit_stops_it(
    make_env: EnvFactory,
    gpg_signer: GpgSigner,
    kube_api_client: k8s.ApiClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    keys = tmp_path / "trusted-keys"
    gpg_signer.export_to(keys)
    # The operator signs the sync tag with a key from its own keyring ($GNUPGHOME).
    monkeypatch.setenv("GNUPGHOME", str(gpg_signer.home))
    env = make_env(
        signer=gpg_signer,
        git={
            "verify_signatures": mode,
            "gpg_keys_dir": str(keys),
            "signing_key": gpg_signer.fingerprint,
        },
    )
    state = env.sync()
    assert state["status"] == "synced", state
    signed = env.remote.head()
    assert state["revision"] == signed
    tag = run_git("cat-file", "-p", "refs/tags/flux", cwd=env.remote.bare)
    assert f"object {signed}" in tag
    assert "-----BEGIN PGP SIGNATURE-----" in tag

    text = (EXAMPLE / "deployment.yaml").read_text().replace("v0.1", "v0.2")
    unsigned = env.remote.commit({"deployment.yaml": text}, "unsigned change")
    state = env.sync()
    assert state["status"] == "synced"
    assert state["revision"] == signed
    message = f"commit {unsigned} has no valid signature from a trusted key"
    assert state["verify_error"] == message
    assert message in env.events()
    assert _image(kube_api_client, env.namespace) == "gitopsbook/sample-app:v0.1"

    gpg_signer.commit(env.remote, {"note.txt": "signed on top"}, "signed on top of unsigned")
    state = env.sync()
    assert state["revision"] == signed  # an unsigned commit below HEAD still blocks it
    assert _image(kube_api_client, env.namespace) == "gitopsbook/sample-app:v0.1"


def test_unsigned_first_commit_applies_nothing(
    make_env: EnvFactory, gpg_signer: GpgSigner, kube_api_client: k8s.ApiClient, tmp_path: Path
) -> None:
    keys = tmp_path / "trusted-keys"
    gpg_signer.export_to(keys)
    env = make_env(git={"verify_signatures": "all", "gpg_keys_dir": str(keys)})
    state = env.sync()
    assert state["status"] == "failed"
    head = env.remote.head()
    assert state["error"].startswith(
        f"verify failed: commit {head} has no valid signature from a trusted key"
    )
    assert not _exists("Deployment", kube_api_client, env.namespace)


def test_deleted_branch_is_reported_and_the_cluster_left_alone(
    env: Env, kube_api_client: k8s.ApiClient
) -> None:
    assert env.sync()["status"] == "synced"
    run_git("update-ref", "-d", "refs/heads/master", cwd=env.remote.bare)
    state = env.sync()
    assert state["status"] == "failed"
    expected = f"fetch failed: branch 'master' not found at {env.remote.url}"
    assert state["error"] == expected
    assert expected in env.events()
    assert _image(kube_api_client, env.namespace) == "gitopsbook/sample-app:v0.1"


KUSTOMIZATION = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - deployment.yaml
  - service.yaml
commonLabels:
  team: web
"""
FLUX_YAML = """\
version: 1
patchUpdated:
  generators:
    - command: kubectl kustomize .
      timeout: 30
  patchFile: flux-patch.yaml
"""
PATCH = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: sample-app
spec:
  template:
    spec:
      containers:
        - name: sample-app
          image: gitopsbook/sample-app:v0.2-patched
"""


def test_kustomize_generator_with_patch_file(
    make_env: EnvFactory, kube_api_client: k8s.ApiClient
) -> None:
    env = make_env(manifest_generation=True)
    env.remote.commit(
        {".flux.yaml": FLUX_YAML, "kustomization.yaml": KUSTOMIZATION, "flux-patch.yaml": PATCH},
        "generate with kustomize and patch",
    )
    state = env.sync()
    assert state["status"] == "synced", state
    assert state["applied"] == "2"
    assert _image(kube_api_client, env.namespace) == "gitopsbook/sample-app:v0.2-patched"
    service = k8s.CoreV1Api(kube_api_client).read_namespaced_service("sample-app", env.namespace)
    assert service.metadata.labels["team"] == "web"


def test_hanging_generator_is_killed_and_reported(
    make_env: EnvFactory, kube_api_client: k8s.ApiClient
) -> None:
    env = make_env(manifest_generation=True)
    assert env.sync()["status"] == "synced"
    hanging = (
        "version: 1\ncommandUpdated:\n  generators:\n    - command: sleep 600\n      timeout: 1\n"
    )
    env.remote.commit({".flux.yaml": hanging}, "a generator that hangs")
    state = env.sync()
    assert state["status"] == "failed"
    assert state["error"].startswith("generate failed: ")
    assert "sleep 600" in state["error"]
    assert "timed out" in state["error"] or "timeout" in state["error"]
    assert _image(kube_api_client, env.namespace) == "gitopsbook/sample-app:v0.1"


def test_crd_and_its_objects_in_one_revision(
    env: Env, kube_api_client: k8s.ApiClient, key_prefix: str
) -> None:
    group = f"{key_prefix.strip(':')}.example.com"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }
    widget = {
        "apiVersion": f"{group}/v1",
        "kind": "Widget",
        "metadata": {"name": "w1"},
        "spec": {"size": 3},
    }
    env.remote.commit(
        {"crd.yaml": yaml.safe_dump(crd), "widget.yaml": yaml.safe_dump(widget)},
        "a CRD and an object of it",
    )
    state = env.sync()
    assert state["status"] == "synced", state
    assert state["applied"] == "4"
    live = k8s.CustomObjectsApi(kube_api_client).get_namespaced_custom_object(
        group, "v1", env.namespace, "widgets", "w1"
    )
    assert live["spec"] == {"size": 3}


def test_identical_input_is_rendered_once(env: Env) -> None:
    assert env.sync()["status"] == "synced"
    assert env.sync(full=True)["status"] == "synced"
    rendered = [m for m in env.events() if m.startswith("rendered ")]
    applied = [m for m in env.events() if m.startswith("applied ")]
    assert len(rendered) == 1
    assert len(applied) == 2
