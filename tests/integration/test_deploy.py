"""deploy/: the manifests are valid for a real API server, and the shipped config validates."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml
from kubernetes import client as k8s
from kubernetes.dynamic import DynamicClient

from gitops_pipeline.config import parse_settings

BASE = Path(__file__).parents[2] / "deploy" / "kubernetes"


def _rendered() -> list[dict[str, object]]:
    built = subprocess.run(
        ["kubectl", "kustomize", str(BASE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [doc for doc in yaml.safe_load_all(built.stdout) if doc]


def dry_run_apply(dynamic: DynamicClient, objects: list[dict[str, object]], manager: str) -> None:
    """Server-side apply every object as a dry run (raising on any refusal); the Namespace is
    created for real, so the namespaced dry-runs have somewhere to go."""
    for obj in sorted(objects, key=lambda o: o["kind"] != "Namespace"):
        resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        meta = obj["metadata"]
        assert isinstance(meta, dict)
        resource.server_side_apply(
            body=obj,
            namespace=meta.get("namespace"),
            field_manager=manager,
            force_conflicts=True,
            dry_run=None if obj["kind"] == "Namespace" else "All",
        )


def test_every_object_passes_a_server_side_dry_run(kube_api_client: k8s.ApiClient) -> None:
    dynamic = DynamicClient(kube_api_client)
    objects = _rendered()
    kinds = sorted({str(o["kind"]) for o in objects})
    assert kinds == [
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "Namespace",
        "Service",
        "ServiceAccount",
    ]
    dry_run_apply(dynamic, objects, "deploy-test")


def test_redis_never_evicts() -> None:
    configmap = next(o for o in _rendered() if o["metadata"]["name"] == "gitops-pipeline-redis")
    assert "maxmemory-policy noeviction" in configmap["data"]["redis.conf"]


def test_shipped_config_is_valid(tmp_path: Path) -> None:
    configmap = next(o for o in _rendered() if o["metadata"]["name"] == "gitops-pipeline-config")
    text: str = configmap["data"]["gitops.yaml"]
    for secret in ("api/admin-token", "flower/basic-auth"):
        path = tmp_path / secret
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("placeholder:secret\n")
        text = text.replace(f"/etc/gitops-pipeline/secrets/{secret}", str(path))
    settings = parse_settings(text, "deploy/kubernetes/config.yaml", {})
    assert settings.redis_url == "redis://redis.gitops-pipeline.svc:6379/0"
    assert [p.name for p in settings.pipelines] == ["sample-app"]
