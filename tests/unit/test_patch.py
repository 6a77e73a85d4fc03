"""Strategic merge and patch files, as Flux v1's `patchUpdated` applies them."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from gitops_pipeline.errors import ManifestError
from gitops_pipeline.manifests.load import Manifest
from gitops_pipeline.manifests.patch import (
    apply_patches,
    json_merge,
    patch_object,
    strategic_merge,
)

DEPLOYMENT: dict[str, Any] = yaml.safe_load("""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app: web, tier: front}
spec:
  replicas: 2
  template:
    spec:
      containers:
        - name: app
          image: registry.local/web:1.0
          env:
            - {name: MODE, value: prod}
            - {name: DEBUG, value: "0"}
          ports:
            - {containerPort: 8080, name: http}
          volumeMounts:
            - {mountPath: /data, name: data}
        - name: sidecar
          image: registry.local/proxy:2.0
      volumes:
        - {name: data, emptyDir: {}}
      tolerations:
        - {key: a, operator: Exists}
        - {key: b, operator: Exists}
""")


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = obj["spec"]["template"]["spec"]["containers"]
    return containers


def _pod_patch(pod_spec: dict[str, Any]) -> dict[str, Any]:
    return {"spec": {"template": {"spec": pod_spec}}}


def test_container_image_change_merges_by_name() -> None:
    before = copy.deepcopy(DEPLOYMENT)
    patched = strategic_merge(
        DEPLOYMENT, _pod_patch({"containers": [{"name": "sidecar", "image": "proxy:2.1"}]})
    )
    app, sidecar = _containers(patched)
    assert sidecar == {"name": "sidecar", "image": "proxy:2.1"}
    assert app == _containers(DEPLOYMENT)[0]
    assert before == DEPLOYMENT  # inputs are not changed


def test_new_container_is_appended() -> None:
    patched = strategic_merge(
        DEPLOYMENT, _pod_patch({"containers": [{"name": "logger", "image": "log:1"}]})
    )
    assert [c["name"] for c in _containers(patched)] == ["app", "sidecar", "logger"]


def test_env_merges_by_name() -> None:
    patched = strategic_merge(
        DEPLOYMENT,
        _pod_patch(
            {
                "containers": [
                    {
                        "name": "app",
                        "env": [{"name": "DEBUG", "value": "1"}, {"name": "NEW", "value": "x"}],
                    }
                ]
            }
        ),
    )
    assert _containers(patched)[0]["env"] == [
        {"name": "MODE", "value": "prod"},
        {"name": "DEBUG", "value": "1"},
        {"name": "NEW", "value": "x"},
    ]
    assert _containers(patched)[0]["image"] == "registry.local/web:1.0"


def test_ports_mounts_and_volumes_merge_by_their_keys() -> None:
    patched = strategic_merge(
        DEPLOYMENT,
        _pod_patch(
            {
                "containers": [
                    {
                        "name": "app",
                        "ports": [{"containerPort": 8080, "name": "web"}, {"containerPort": 9090}],
                        "volumeMounts": [{"mountPath": "/data", "readOnly": True}],
                    }
                ],
                "volumes": [{"name": "cache", "emptyDir": {}}],
            }
        ),
    )
    app = _containers(patched)[0]
    assert app["ports"] == [{"containerPort": 8080, "name": "web"}, {"containerPort": 9090}]
    assert app["volumeMounts"] == [{"mountPath": "/data", "name": "data", "readOnly": True}]
    assert [v["name"] for v in patched["spec"]["template"]["spec"]["volumes"]] == ["data", "cache"]


def test_service_ports_merge_by_port() -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443, "targetPort": 8443}]},
    }
    patched = strategic_merge(service, {"spec": {"ports": [{"port": 443, "targetPort": 9443}]}})
    assert patched["spec"]["ports"] == [
        {"port": 80, "targetPort": 8080},
        {"port": 443, "targetPort": 9443},
    ]


def test_lists_without_merge_key_are_replaced() -> None:
    patched = strategic_merge(
        DEPLOYMENT, _pod_patch({"tolerations": [{"key": "c", "operator": "Exists"}]})
    )
    assert patched["spec"]["template"]["spec"]["tolerations"] == [
        {"key": "c", "operator": "Exists"}
    ]


def test_network_policy_ports_are_replaced_not_merged() -> None:
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "p"},
        "spec": {"ingress": [{"ports": [{"port": 80}]}]},
    }
    patched = strategic_merge(policy, {"spec": {"ingress": [{"ports": [{"port": 443}]}]}})
    assert patched["spec"]["ingress"] == [{"ports": [{"port": 443}]}]


def test_null_deletes_keys_at_any_depth() -> None:
    patched = strategic_merge(
        DEPLOYMENT,
        {
            "metadata": {"labels": {"tier": None}},
            "spec": {"replicas": None},
        },
    )
    assert patched["metadata"]["labels"] == {"app": "web"}
    assert "replicas" not in patched["spec"]
    inner = strategic_merge(
        DEPLOYMENT, _pod_patch({"containers": [{"name": "sidecar", "image": None}]})
    )
    assert _containers(inner)[1] == {"name": "sidecar"}


def test_scalars_and_new_maps_are_set() -> None:
    patched = strategic_merge(
        DEPLOYMENT,
        {"metadata": {"annotations": {"fluxcd.io/automated": "true", "gone": None}}},
    )
    assert patched["metadata"]["annotations"] == {"fluxcd.io/automated": "true"}


def test_patch_directives() -> None:
    deleted = strategic_merge(
        DEPLOYMENT, _pod_patch({"containers": [{"name": "sidecar", "$patch": "delete"}]})
    )
    assert [c["name"] for c in _containers(deleted)] == ["app"]
    replaced = strategic_merge(
        DEPLOYMENT, {"metadata": {"labels": {"only": "this", "$patch": "replace"}}}
    )
    assert replaced["metadata"]["labels"] == {"only": "this"}
    reordered = strategic_merge(
        DEPLOYMENT,
        _pod_patch(
            {
                "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}],
                "containers": [{"name": "app", "image": "web:1.1"}],
            }
        ),
    )
    assert [(c["name"], c["image"]) for c in _containers(reordered)] == [
        ("sidecar", "registry.local/proxy:2.0"),
        ("app", "web:1.1"),
    ]
    retained = strategic_merge(
        DEPLOYMENT, {"metadata": {"$retainKeys": ["name", "namespace"], "labels": {"x": "y"}}}
    )
    assert retained["metadata"] == {"name": "web", "namespace": "shop"}


def test_unsupported_directive_and_missing_merge_key_are_errors() -> None:
    with pytest.raises(ManifestError, match=r"unsupported directive '\$deleteFromPrimitiveList"):
        strategic_merge(DEPLOYMENT, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}})
    with pytest.raises(
        ManifestError, match=r"spec.template.spec.containers: an item has no merge key 'name'"
    ):
        strategic_merge(DEPLOYMENT, _pod_patch({"containers": [{"image": "x"}]}))


def test_custom_resources_get_a_json_merge_patch() -> None:
    release = {
        "apiVersion": "helm.fluxcd.io/v1",
        "kind": "HelmRelease",
        "metadata": {"name": "r"},
        "spec": {"values": {"containers": [{"name": "a", "image": "1"}], "keep": True}},
    }
    patched = patch_object(
        release, {"spec": {"values": {"containers": [{"name": "b"}], "keep": None}}}
    )
    assert patched["spec"]["values"] == {"containers": [{"name": "b"}]}
    assert json_merge({"a": {"b": 1}}, {"a": {"c": 2}}) == {"a": {"b": 1, "c": 2}}


GENERATED = [
    Manifest(copy.deepcopy(DEPLOYMENT), "app/.flux.yaml (generator: gen)"),
    Manifest(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "shop"}},
        "app/.flux.yaml (generator: gen)",
    ),
]


def test_patch_file_is_matched_by_identity() -> None:
    text = """\
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  template:
    spec:
      containers:
        - name: app
          image: registry.local/web:1.1
---
"""
    patched = apply_patches(GENERATED, text, "app/flux-patch.yaml")
    assert _containers(patched[0].obj)[0]["image"] == "registry.local/web:1.1"
    assert patched[0].source == "app/.flux.yaml (generator: gen), patched by app/flux-patch.yaml"
    assert patched[1] == GENERATED[1]
    assert _containers(GENERATED[0].obj)[0]["image"] == "registry.local/web:1.0"


@pytest.mark.parametrize(
    ("doc", "described"),
    [
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: other, namespace: shop}\n",
            "apps/v1 shop:Deployment/other",
        ),
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n",
            "apps/v1 <default>:Deployment/web",
        ),
        (
            "apiVersion: apps/v1beta1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\n",
            "apps/v1beta1 shop:Deployment/web",
        ),
    ],
)
def test_patch_matching_nothing_is_an_error_naming_it(doc: str, described: str) -> None:
    with pytest.raises(ManifestError) as caught:
        apply_patches(GENERATED, doc, "app/flux-patch.yaml")
    assert str(caught.value) == (
        f"app/flux-patch.yaml: the patch for {described} matches no generated object"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kind: [\n", r"^app/flux-patch.yaml:2: "),
        ("just text\n", "document 1 is not an object patch"),
        ("---\n---\nkind: Deployment\nmetadata: {name: web}\n", "document 2 is not an object"),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg, namespace: shop}\n---\n"
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg, namespace: shop}\n",
            "v1 shop:ConfigMap/cfg is patched twice",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\n"
            "metadata: {name: cfg, namespace: shop, $retainKeys: [name]}\n",
            "changes its apiVersion, kind, namespace or name",
        ),
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\n"
            "spec: {template: {spec: {containers: [{image: x}]}}}\n",
            "cannot patch apps/v1 shop:Deployment/web: spec.template.spec.containers: an item",
        ),
    ],
)
def test_bad_patch_files(text: str, expected: str) -> None:
    with pytest.raises(ManifestError, match=expected):
        apply_patches(GENERATED, text, "app/flux-patch.yaml")


def test_empty_patch_file_changes_nothing() -> None:
    assert apply_patches(GENERATED, "", "p.yaml") == GENERATED
    assert apply_patches(GENERATED, "---\n# nothing yet\n", "p.yaml") == GENERATED
