"""Registry credentials kept in the cluster: the docker config of an image pull secret."""

from __future__ import annotations

import base64
import json
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from gitops_pipeline.cluster.apply import REQUEST_TIMEOUT


def docker_config(dynamic: DynamicClient, namespace: str, name: str) -> dict[str, Any] | None:
    """The `{"auths": ...}` of a `kubernetes.io/dockerconfigjson` (or legacy `dockercfg`)
    secret, or None when it is missing, unreadable or of another type."""
    secrets = dynamic.resources.get(api_version="v1", kind="Secret")
    try:
        secret = secrets.get(name=name, namespace=namespace, _request_timeout=REQUEST_TIMEOUT)
    except ApiException:
        return None
    data = secret.to_dict().get("data") or {}
    try:
        if ".dockerconfigjson" in data:
            parsed = json.loads(base64.b64decode(data[".dockerconfigjson"]))
            return parsed if isinstance(parsed, dict) else None
        if ".dockercfg" in data:
            return {"auths": json.loads(base64.b64decode(data[".dockercfg"]))}
    except ValueError:
        return None
    return None
