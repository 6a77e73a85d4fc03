"""Prometheus metrics, read from the pipelines' sync records in Redis at scrape time.

Workers run in many processes on many machines; the sync record in Redis is the one place that
knows every pipeline's last result, so the web process exports from there instead of each worker
keeping counters of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gitops_pipeline.config import Settings
from gitops_pipeline.store import Keys

_STAGES = ("fetch", "generate", "apply")
_RESULTS = ("applied", "unchanged", "ignored", "failed", "deleted")


class SyncCollector(Collector):
    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self._settings = settings
        self._client = client
        self._keys = Keys(settings.key_prefix)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        duration = GaugeMetricFamily(
            "gitops_sync_duration_seconds",
            "Duration of the last sync, in total and per stage",
            labels=["pipeline", "stage"],
        )
        objects = GaugeMetricFamily(
            "gitops_sync_objects",
            "Objects in the last sync, by result",
            labels=["pipeline", "result"],
        )
        success = GaugeMetricFamily(
            "gitops_sync_last_success_timestamp_seconds",
            "When the pipeline last synced without errors (Unix time)",
            labels=["pipeline"],
        )
        status = GaugeMetricFamily(
            "gitops_sync_status",
            "1 for the pipeline's current sync status",
            labels=["pipeline", "status"],
        )
        for pipeline in self._settings.pipelines:
            record = cast(dict[str, str], self._client.hgetall(self._keys.sync(pipeline.name)))
            name = pipeline.name
            if "duration_seconds" in record:
                duration.add_metric([name, "total"], float(record["duration_seconds"]))
            for stage in _STAGES:
                if f"{stage}_seconds" in record:
                    duration.add_metric([name, stage], float(record[f"{stage}_seconds"]))
            for result in _RESULTS:
                if result in record:
                    objects.add_metric([name, result], float(record[result]))
            if "last_success_at" in record:
                success.add_metric([name], float(record["last_success_at"]))
            status.add_metric([name, record.get("status", "never-synced")], 1.0)
        yield from (duration, objects, success, status)
