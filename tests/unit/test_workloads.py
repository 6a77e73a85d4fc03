"""Finding the images of workloads in rendered manifests."""

from __future__ import annotations

from typing import Any

from gitops_pipeline.manifests.workloads import (
    ContainerImage,
    container_images,
    image_selected,
    workload_annotations,
)
from gitops_pipeline.policy.annotations import read_policy


def _pod(*images: str, init: str | None = None, secrets: list[str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": f"c{i}", "image": im} for i, im in enumerate(images)]
    }
    if init:
        spec["initContainers"] = [{"name": "init", "image": init}]
    if secrets:
        spec["imagePullSecrets"] = [{"name": name} for name in secrets]
    return {"template": {"spec": spec}}


def test_images_of_every_workload_kind() -> None:
    objects = [
        {
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": _pod("nginx:1.25", init="busybox"),
        },
        {
            "kind": "StatefulSet",
            "metadata": {"name": "db", "namespace": "data"},
            "spec": _pod("postgres:16"),
        },
        {
            "kind": "CronJob",
            "metadata": {"name": "backup"},
            "spec": {"jobTemplate": {"spec": _pod("restic/restic:0.16")}},
        },
        {"kind": "DaemonSet", "metadata": {"name": "agent"}, "spec": _pod("agent:1")},
        {"kind": "Job", "metadata": {"name": "once"}, "spec": _pod("migrate:2", secrets=["reg"])},
        {"kind": "ConfigMap", "metadata": {"name": "not-a-workload"}},
        {"kind": "Deployment", "metadata": {"name": "broken"}, "spec": {"template": None}},
    ]
    assert container_images(objects, "default") == [
        ContainerImage("default:Deployment/web", "init", "busybox", True),
        ContainerImage("default:Deployment/web", "c0", "nginx:1.25", False),
        ContainerImage("data:StatefulSet/db", "c0", "postgres:16", False),
        ContainerImage("default:CronJob/backup", "c0", "restic/restic:0.16", False),
        ContainerImage("default:DaemonSet/agent", "c0", "agent:1", False),
        ContainerImage("default:Job/once", "c0", "migrate:2", False, ("reg",)),
    ]


def test_include_and_exclude_globs() -> None:
    assert image_selected("quay.io/team/app:1", [], [])
    assert image_selected("quay.io/team/app:1", ["quay.io/*"], [])
    assert not image_selected("docker.io/nginx:1", ["quay.io/*"], [])
    assert not image_selected("quay.io/team/app:1", [], ["*/team/*"])


def test_malformed_fields_are_read_around_not_crashed_on() -> None:
    """A string where the API expects an object is the API server's to refuse; reading the
    other workloads (for the API, the status page and scans) goes on."""
    good = {"kind": "Deployment", "metadata": {"name": "ok"}, "spec": _pod("nginx:1")}
    objects: list[dict[str, Any]] = [
        {"kind": "Deployment", "metadata": {"name": "a", "annotations": "x"}, "spec": "oops"},
        {
            "kind": "Deployment",
            "metadata": "oops",
            "spec": {"template": {"spec": {"containers": "x"}}},
        },
        {"kind": "CronJob", "metadata": {"name": "c"}, "spec": {"jobTemplate": ["x"]}},
        {
            "kind": "Deployment",
            "metadata": {"name": "d"},
            "spec": {
                "template": {
                    "spec": {
                        "containers": [{"name": "c", "image": "i:1"}],
                        "imagePullSecrets": "nope",
                    }
                }
            },
        },
        good,
    ]
    images = container_images(objects, "default")
    assert images == [
        ContainerImage("default:Deployment/d", "c", "i:1", False, ()),
        ContainerImage("default:Deployment/ok", "c0", "nginx:1", False, ()),
    ]
    annotations = workload_annotations(objects, "default")
    assert annotations["default:Deployment/a"] == {}
    assert read_policy(annotations["default:Deployment/a"]).automated is False
