"""Live workloads of a set of namespaces, as plain dicts (the scanners want their images)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from gitops_pipeline.cluster.apply import REQUEST_TIMEOUT

_KINDS = (
    ("apps/v1", "Deployment"),
    ("apps/v1", "DaemonSet"),
    ("apps/v1", "StatefulSet"),
    ("batch/v1", "Job"),
    ("batch/v1beta1", "CronJob"),
    ("batch/v1", "CronJob"),
)


def live_workloads(dynamic: DynamicClient, namespaces: Iterable[str]) -> list[dict[str, Any]]:
    """Every workload in `namespaces` that the client may list (others are skipped)."""
    found: dict[tuple[str, str, str], dict[str, Any]] = {}
    for namespace in sorted(set(namespaces)):
        for api_version, kind in _KINDS:
            try:
                resource = dynamic.resources.get(api_version=api_version, kind=kind)
                response = resource.get(
                    namespace=namespace, serialize=False, _request_timeout=REQUEST_TIMEOUT
                )
                items = json.loads(response.data).get("items") or []
            except (ApiException, ResourceNotFoundError, ValueError):
                continue  # kind not served, or not allowed to list it here
            for item in items:
                item.setdefault("kind", kind)
                meta = item.get("metadata") or {}
                found[(namespace, kind, str(meta.get("name")))] = item
    return list(found.values())
