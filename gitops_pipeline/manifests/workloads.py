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


def _mapping(value: Any) -> dict[str, Any]:
    """`value` when it is a mapping, else empty: a malformed field (a string where the API
    expects an object) is the API server's to refuse, and must not break reading the rest."""
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = _mapping(obj.get("spec"))
    if obj.get("kind") == "CronJob":
        spec = _mapping(_mapping(spec.get("jobTemplate")).get("spec"))
    return _mapping(_mapping(spec.get("template")).get("spec"))


def container_images(
    objects: Iterable[dict[str, Any]], default_namespace: str
) -> list[ContainerImage]:
    """Every container and init container image of the workloads among `objects`."""
    found: list[ContainerImage] = []
    for obj in objects:
        if obj.get("kind") not in WORKLOAD_KINDS:
            continue
        meta = _mapping(obj.get("metadata"))
        workload = f"{meta.get('namespace') or default_namespace}:{obj['kind']}/{meta.get('name')}"
        pod = _pod_spec(obj)
        secrets = tuple(
            str(ref["name"])
            for ref in _list(pod.get("imagePullSecrets"))
            if isinstance(ref, dict) and ref.get("name")
        )
        for key, init in (("initContainers", True), ("containers", False)):
            for container in _list(pod.get(key)):
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
        meta = _mapping(obj.get("metadata"))
        ref = f"{meta.get('namespace') or default_namespace}:{obj.get('kind')}/{meta.get('name')}"
        found[ref] = _mapping(meta.get("annotations"))
    return found


def image_selected(image: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """The pipeline's `include_images` / `exclude_images` globs (empty include: everything)."""
    if include and not any(fnmatch.fnmatchcase(image, pattern) for pattern in include):
        return False
    return not any(fnmatch.fnmatchcase(image, pattern) for pattern in exclude)
