"""Server-side apply of a rendered set, in rank order, concurrently within a rank."""

from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError

FIELD_MANAGER = "gitops-pipeline"
REQUEST_TIMEOUT = 30.0

# Flux v1's ordering: what others depend on goes first.
_RANKS: list[set[str]] = [
    {"Namespace"},
    {
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "Role",
        "PersistentVolume",
        "Service",
    },
    {
        "ResourceQuota",
        "LimitRange",
        "Secret",
        "ConfigMap",
        "RoleBinding",
        "ClusterRoleBinding",
        "PersistentVolumeClaim",
        "Ingress",
    },
    {
        "Deployment",
        "DaemonSet",
        "StatefulSet",
        "ReplicaSet",
        "Job",
        "CronJob",
        "Pod",
        "ReplicationController",
    },
]


def rank(kind: str) -> int:
    """0 for Namespaces up to len(_RANKS) for everything not listed."""
    for index, kinds in enumerate(_RANKS):
        if kind in kinds:
            return index
    return len(_RANKS)


def object_ref(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    prefix = f"{namespace}:" if namespace else "<cluster>:"
    return f"{prefix}{obj.get('kind')}/{meta.get('name')}"


@dataclass
class ApplyResult:
    """What one apply pass did: refs applied, and an error message per failed ref."""

    applied: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def _api_message(exc: ApiException) -> str:
    try:
        body = json.loads(str(exc.body))
        parts = [str(exc.status), body.get("reason") or "", body.get("message") or ""]
        return " ".join(part for part in parts if part)
    except (TypeError, ValueError):
        return f"{exc.status} {exc.reason}"


def _default_port_protocols(node: Any) -> None:
    """Write `protocol: TCP` (the API's own default) into ports lists that omit it.

    Server-side apply on older API servers (seen on 1.20) refuses a Service or container port
    without `protocol`, because it is part of the list's merge key; kubectl's client-side apply
    never hit this, so manifests written for Flux v1 commonly omit it.
    """
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "ports" and isinstance(value, list):
                for port in value:
                    if isinstance(port, dict) and ("containerPort" in port or "port" in port):
                        port.setdefault("protocol", "TCP")
            else:
                _default_port_protocols(value)
    elif isinstance(node, list):
        for item in node:
            _default_port_protocols(item)


class Applier:
    """Applies objects to one cluster with the operator's field manager, conflicts forced."""

    def __init__(self, dynamic: DynamicClient, default_namespace: str, concurrency: int = 8):
        self._dynamic = dynamic
        self._default_namespace = default_namespace
        self._concurrency = concurrency

    def _resource(self, obj: dict[str, Any]) -> Any:
        return self._dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])

    def place(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Give a namespaced object without a namespace the default one; copy, never mutate."""
        resource = self._resource(obj)
        placed = json.loads(json.dumps(obj))
        _default_port_protocols(placed)
        meta = placed.setdefault("metadata", {})
        if resource.namespaced:
            meta.setdefault("namespace", self._default_namespace)
        else:
            meta.pop("namespace", None)
        return placed

    def _apply_one(self, obj: dict[str, Any]) -> tuple[str, str | None]:
        ref = object_ref(obj)
        try:
            resource = self._resource(obj)
            resource.server_side_apply(
                body=obj,
                namespace=obj["metadata"].get("namespace"),
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ResourceNotFoundError:
            return ref, f"unknown kind {obj['kind']} in {obj['apiVersion']}"
        except ApiException as exc:
            return ref, _api_message(exc)
        except Exception as exc:  # a transport failure for one object must not stop the rest
            return ref, f"{type(exc).__name__}: {exc}"
        return ref, None

    def apply(self, objects: Iterable[dict[str, Any]]) -> ApplyResult:
        """Apply by rank; one failing object never stops the others."""
        result = ApplyResult()
        by_rank: dict[int, list[dict[str, Any]]] = {}
        for obj in objects:
            try:
                placed = self.place(obj)
            except ResourceNotFoundError:
                result.errors[object_ref(obj)] = (
                    f"unknown kind {obj['kind']} in {obj['apiVersion']}"
                )
                continue
            by_rank.setdefault(rank(obj["kind"]), []).append(placed)
        with ThreadPoolExecutor(max_workers=self._concurrency) as pool:
            for level in sorted(by_rank):
                for ref, error in pool.map(self._apply_one, by_rank[level]):
                    if error is None:
                        result.applied.append(ref)
                    else:
                        result.errors[ref] = error
        return result
