"""Prometheus metrics, read from Redis at scrape time.

Workers run in many processes on many machines and Prometheus scrapes only the web process, so
everything exported lives in Redis: the pipelines' sync records, the cross-process counters
(`gitops_pipeline.counters`) and the broker's queues. A scrape costs one HGETALL per pipeline,
one round trip for every counter hash and one for the queue lengths, whatever the fleet's size.
Every metric is documented in docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import redis
from kombu.transport.redis import PRIORITY_STEPS, Channel
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gitops_pipeline import counters
from gitops_pipeline.api.records import number
from gitops_pipeline.celery_app import celery_config
from gitops_pipeline.config import Settings
from gitops_pipeline.store import Keys

_STAGES = ("fetch", "generate", "apply")
_RESULTS = ("applied", "unchanged", "ignored", "failed", "deleted")


class SyncCollector(Collector):
    """The last sync of every configured pipeline, from its sync record."""

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self._settings = settings
        self._client = client
        self._keys = Keys(settings.key_prefix)

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def _families(self) -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily(
                "gitops_sync_duration_seconds",
                "Duration of the last sync, in total and per stage",
                labels=["pipeline", "stage"],
            ),
            GaugeMetricFamily(
                "gitops_sync_objects",
                "Objects in the last sync, by result",
                labels=["pipeline", "result"],
            ),
            GaugeMetricFamily(
                "gitops_sync_last_success_timestamp_seconds",
                "When the pipeline last synced without errors (Unix time)",
                labels=["pipeline"],
            ),
            GaugeMetricFamily(
                "gitops_sync_status",
                "1 for the pipeline's current sync status",
                labels=["pipeline", "status"],
            ),
            GaugeMetricFamily(
                "gitops_git_ready",
                "1 if the pipeline's last git fetch succeeded, 0 if it failed",
                labels=["pipeline"],
            ),
        )

    def collect(self) -> Iterator[Metric]:
        duration, objects, success, status, git_ready = families = self._families()
        pipe = self._client.pipeline(transaction=False)
        for pipeline in self._settings.pipelines:
            pipe.hgetall(self._keys.sync(pipeline.name))
        records = cast(list[dict[str, str]], pipe.execute())
        for pipeline, record in zip(self._settings.pipelines, records, strict=True):
            name = pipeline.name
            # A field that is not a number (a corrupt record) skips its sample, not the scrape.
            samples = [
                (duration, [name, "total"], "duration_seconds"),
                *((duration, [name, stage], f"{stage}_seconds") for stage in _STAGES),
                *((objects, [name, result], result) for result in _RESULTS),
                (success, [name], "last_success_at"),
                (git_ready, [name], "git_ready"),
            ]
            for family, labels, field in samples:
                value = number(record.get(field))
                if value is not None:
                    family.add_metric(labels, value)
            status.add_metric([name, record.get("status", "never-synced")], 1.0)
        yield from families


@dataclass(frozen=True)
class Counter:
    """A counter kept with `counters.incr(client, prefix, key, amount, **labels)`."""

    key: str
    help: str
    labels: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"gitops_{self.key}_total"


_PIPELINE_RESULT = ("pipeline", "result")
_HOST_RESULT = ("host", "result")

COUNTERS = (
    Counter("syncs", "Finished syncs by result (success, with-errors, failed)", _PIPELINE_RESULT),
    Counter("synced_objects", "Objects handled by finished syncs, by result", _PIPELINE_RESULT),
    Counter("registry_requests", "HTTP requests to registries, by status", ("host", "status")),
    Counter(
        "registry_tag_cache_lookups",
        "Tags a scan needed, by whether their image record was cached (hit) or fetched (miss)",
        _HOST_RESULT,
    ),
    Counter(
        "registry_rate_limit_waits",
        "Registry requests that waited for the shared rate limit, granted or timed out",
        _HOST_RESULT,
    ),
    Counter(
        "registry_rate_limit_wait_seconds", "Seconds requests waited for the rate limit", ("host",)
    ),
    Counter("lock_refusals", "Lock attempts refused while another writer held it", ("kind",)),
    Counter("lock_waits", "Lock grants that followed at least one refusal", ("kind",)),
    Counter("lock_wait_seconds", "Seconds from a lock's first refusal to its grant", ("kind",)),
    Counter("lock_lost", "Fencing checks that found the lock lost or the token stale", ("kind",)),
    Counter("webhook_deliveries", "Webhook deliveries by source and result", ("source", "result")),
)


class CounterCollector(Collector):
    """The cross-process counters, read in one round trip."""

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self._prefix = settings.key_prefix
        self._client = client

    def describe(self) -> Iterator[Metric]:
        for spec in COUNTERS:
            yield CounterMetricFamily(spec.name, spec.help, labels=spec.labels)

    def collect(self) -> Iterator[Metric]:
        stored = counters.read_many(self._client, self._prefix, [s.key for s in COUNTERS])
        for spec in COUNTERS:
            family = CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
            # Label sets are summed over labels this table does not name, so a writer that
            # adds one cannot produce two samples with the same exported labels.
            totals: dict[tuple[str, ...], float] = {}
            for labels, value in stored[spec.key]:
                values = tuple(str(labels.get(name, "")) for name in spec.labels)
                totals[values] = totals.get(values, 0.0) + value
            for values, total in sorted(totals.items()):
                family.add_metric(list(values), total)
            yield family


class QueueCollector(Collector):
    """Messages waiting in each Celery queue, and those taken by workers but not acknowledged.

    The keys are the broker's, as kombu's Redis transport names them: its global key prefix plus
    the queue name, and one more list per priority step (that is how it emulates priorities).
    """

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self._client = client
        config = celery_config(settings)
        transport = config["broker_transport_options"]
        prefix = transport.get("global_keyprefix", "")
        sep = transport.get("sep", Channel.sep)
        steps = transport.get("priority_steps", PRIORITY_STEPS)
        self._queues = {
            queue.name: [
                f"{prefix}{queue.name}{sep}{s}" if s else f"{prefix}{queue.name}" for s in steps
            ]
            for queue in config["task_queues"]
        }
        self._unacked = prefix + transport.get("unacked_key", Channel.unacked_key)

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "gitops_queue_length", "Messages waiting in the Celery queue", labels=["queue"]
            ),
            GaugeMetricFamily(
                "gitops_queue_unacked",
                "Messages delivered to workers and not yet acknowledged (running or reserved)",
            ),
        )

    def collect(self) -> Iterator[Metric]:
        length, unacked = families = self._families()
        pipe = self._client.pipeline(transaction=False)
        for keys in self._queues.values():
            for key in keys:
                pipe.llen(key)
        pipe.hlen(self._unacked)
        replies = cast(list[int], pipe.execute())
        position = 0
        for queue, keys in self._queues.items():
            length.add_metric([queue], float(sum(replies[position : position + len(keys)])))
            position += len(keys)
        unacked.add_metric([], float(replies[position]))
        yield from families


def collectors(
    settings: Settings, client: redis.Redis
) -> list[SyncCollector | CounterCollector | QueueCollector]:
    """Every collector `/metrics` exports."""
    return [
        SyncCollector(settings, client),
        CounterCollector(settings, client),
        QueueCollector(settings, client),
    ]
