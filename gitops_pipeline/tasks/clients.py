"""Clients that tasks share within a worker process."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from gitops_pipeline.cluster.client import api_client, cluster_id, dynamic_client


@cache
def cluster_client(kubeconfig: Path | None, context: str | None, impersonate: str | None) -> Any:
    """One discovery-backed client per cluster identity per process, with the cluster's id."""
    api = api_client(kubeconfig, context, impersonate)
    return dynamic_client(api), cluster_id(api)
