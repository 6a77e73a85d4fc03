"""Two writers racing on one cluster: the one whose fencing token went stale writes nothing."""

from __future__ import annotations

import time

import pytest
import redis
from kubernetes import client as k8s
from kubernetes.dynamic import DynamicClient

from gitops_pipeline.cluster.apply import Applier
from gitops_pipeline.locks import FencedLock, LockLost


def _configmaps(namespace: str, count: int, value: str) -> list[dict[str, object]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"cm-{i}"},
            "data": {"writer": value},
        }
        for i in range(count)
    ]


def test_stale_writer_is_fenced_out(
    redis_url: str, kube_api_client: k8s.ApiClient, kube_namespace: str
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    keys = ("t:lock:cluster:race", "t:fence:cluster:race")
    stale = FencedLock(client, *keys, ttl=0.3)
    stale.acquire()
    stale._stop.set()  # the stale writer stalls (GC pause, network partition): no renewals
    time.sleep(0.6)
    fresh = FencedLock(client, *keys, ttl=5.0)
    fresh.acquire()

    applier = Applier(DynamicClient(kube_api_client), "race", kube_namespace)
    with pytest.raises(LockLost):
        applier.apply(_configmaps(kube_namespace, 5, "stale"), before_batch=stale.check)
    core = k8s.CoreV1Api(kube_api_client)
    assert core.list_namespaced_config_map(kube_namespace).items == []

    result = applier.apply(_configmaps(kube_namespace, 5, "fresh"), before_batch=fresh.check)
    fresh.release()
    assert len(result.applied) == 5
    written = core.list_namespaced_config_map(kube_namespace).items
    assert sorted(cm.data["writer"] for cm in written) == ["fresh"] * 5
