"""Kubernetes API clients built from a kubeconfig, optionally impersonating a service account."""

from __future__ import annotations

import hashlib
from pathlib import Path

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException
from kubernetes.dynamic import DynamicClient

from gitops_pipeline.errors import ClusterError, PermanentError


def api_client(
    kubeconfig: Path | None,
    context: str | None = None,
    impersonate: str | None = None,
    connections: int = 32,
) -> client.ApiClient:
    """A client for the cluster; in-cluster config when no kubeconfig is given.

    `impersonate` is `namespace:name` of a service account (or a plain user name): every request
    then carries exactly that identity's RBAC rights. `connections` must be at least the number
    of threads that share the client, or urllib3 throws connections away (a TLS handshake each).
    """
    configuration = client.Configuration()
    try:
        if kubeconfig is not None:
            config.load_kube_config(
                config_file=str(kubeconfig), context=context, client_configuration=configuration
            )
        else:
            config.load_incluster_config(client_configuration=configuration)
    except (ConfigException, OSError) as exc:
        raise PermanentError(f"cannot load kubeconfig {kubeconfig}: {exc}") from None
    configuration.connection_pool_maxsize = connections
    api = client.ApiClient(configuration)
    if impersonate:
        namespace, _, name = impersonate.rpartition(":")
        user = f"system:serviceaccount:{namespace}:{name}" if namespace else name
        api.set_default_header("Impersonate-User", user)
    return api


def dynamic_client(api: client.ApiClient) -> DynamicClient:
    """A discovery-backed client; raises `ClusterError` when the API server is unreachable."""
    try:
        return DynamicClient(api)
    except Exception as exc:  # urllib3 and discovery raise many types; all mean "unreachable"
        raise ClusterError(f"Kubernetes API unreachable: {exc}") from None


def cluster_id(api: client.ApiClient) -> str:
    """A stable name for the cluster behind `api` (its API server URL), for the writer lock."""
    host = str(api.configuration.host).rstrip("/").lower()
    return hashlib.sha256(host.encode()).hexdigest()[:16]
