"""Workloads in a rendered set and the images their containers run."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

WORKLOAD_KINDS = ("Deployment", "DaemonSet", "StatefulSet", "CronJob", "Job")


@dataclass(frozen=True)
class ContainerImage:
    workload: str  # `namespace:Kind/name`, as fluxctl names workloads
    container: str
    image: str
    init: bool
    pull_secrets: tuple[str, ...] = ()  # names of the pod's imagePullSecrets


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec") or {}
    if obj.get("kind") == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    template = spec.get("template") or {}
    pod: dict[str, Any] = template.get("spec") or {}
    return pod


def container_images(
    objects: Iterable[dict[str, Any]], default_namespace: str
) -> list[ContainerImage]:
    """Every container and init container image of the workloads among `objects`."""
    found: list[ContainerImage] = []
    for obj in objects:
        if obj.get("kind") not in WORKLOAD_KINDS:
            continue
        meta = obj.get("metadata") or {}
        workload = f"{meta.get('namespace') or default_namespace}:{obj['kind']}/{meta.get('name')}"
        pod = _pod_spec(obj)
        secrets = tuple(
            str(ref["name"])
            for ref in pod.get("imagePullSecrets") or []
            if isinstance(ref, dict) and ref.get("name")
        )
        for key, init in (("initContainers", True), ("containers", False)):
            for container in pod.get(key) or []:
                image = container.get("image") if isinstance(container, dict) else None
                if isinstance(image, str) and image:
                    name = str(container.get("name"))
                    found.append(ContainerImage(workload, name, image, init, secrets))
    return found


def workload_annotations(
    objects: Iterable[dict[str, Any]], default_namespace: str
) -> dict[str, dict[str, str]]:
    """Annotations of every object, keyed by its `namespace:Kind/name` workload ref."""
    found: dict[str, dict[str, str]] = {}
    for obj in objects:
        meta = obj.get("metadata") or {}
        ref = f"{meta.get('namespace') or default_namespace}:{obj.get('kind')}/{meta.get('name')}"
        found[ref] = meta.get("annotations") or {}
    return found


def image_selected(image: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """The pipeline's `include_images` / `exclude_images` globs (empty include: everything)."""
    if include and not any(fnmatch.fnmatchcase(image, pattern) for pattern in include):
        return False
    return not any(fnmatch.fnmatchcase(image, pattern) for pattern in exclude)
